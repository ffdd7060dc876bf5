"""The device-resident loader: what the model sees is CIFAR cropped, flipped and normalized correctly."""
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from anode_bench.data import DataError, DeviceLoader, Split, channel_stats, load_splits, make_synthetic


def tiny_split(size=16):
    rng = np.random.default_rng(0)
    return Split(rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, size))


def test_batches_are_normalized_nchw_float_and_cover_the_split_once():
    split = tiny_split(10)
    loader = DeviceLoader(split, 4, "cpu", mean=[0.5] * 3, std=[0.25] * 3, augment=False, shuffle=True, drop_last=False,
                          generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    images = torch.cat([x for x, _ in batches])
    assert images.shape == (10, 3, 32, 32) and images.dtype == torch.float32
    expected = (torch.from_numpy(split.images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    order = [int((expected - img).abs().flatten(1).amax(1).argmin()) for img in images]
    assert all(torch.allclose(expected[i], img, atol=1e-5) for i, img in zip(order, images))
    assert sorted(order) == list(range(10))


def test_augmentation_is_a_shifted_crop_of_the_zero_padded_image_maybe_mirrored():
    split = tiny_split(64)
    loader = DeviceLoader(split, 64, "cpu", mean=[0, 0, 0], std=[1 / 255] * 3, augment=True, shuffle=False, drop_last=False,
                          generator=torch.Generator().manual_seed(1))
    (images, _), = list(loader)
    padded = torch.nn.functional.pad(torch.from_numpy(split.images).permute(0, 3, 1, 2).float(), (4, 4, 4, 4))
    flips = 0
    for image, source in zip(images, padded):
        crops = [(source[:, dy : dy + 32, dx : dx + 32], flip) for dy in range(9) for dx in range(9) for flip in (0, 1)]
        matches = [flip for crop, flip in crops if torch.equal(crop.flip(2) if flip else crop, image)]
        assert matches, "every augmented image is one of the 162 crop/flip variants"
        flips += matches[0]
    assert 10 < flips < 54  # about half are mirrored


def test_synthetic_task_is_cifar_shaped_and_deterministic():
    (train, test), (again, _) = make_synthetic(10, 100, 20, seed=3), make_synthetic(10, 100, 20, seed=3)
    assert train.images.shape == (100, 32, 32, 3) and train.images.dtype == np.uint8 and test.labels.shape == (20,)
    assert np.array_equal(train.images, again.images)
    mean, std = channel_stats(train)
    assert all(0.2 < m < 0.8 for m in mean) and all(0.05 < s < 0.5 for s in std)


def test_npz_with_labels_out_of_range_names_the_file(tmp_path):
    path = tmp_path / "bad.npz"
    split = tiny_split(4)
    np.savez(path, x_train=split.images, y_train=split.labels + 10, x_test=split.images, y_test=split.labels)
    with pytest.raises(DataError, match=r"bad.npz: train labels must lie in 0..9"):
        load_splits("cifar10", num_classes=10, path=str(path))


@pytest.mark.parametrize("bad, message", [
    (dict(y_train=np.arange(4) + 0.7), r"bad.npz: y_train must hold integer class labels, got dtype float64"),
    (dict(y_test=np.array([True, False, True, False])), r"bad.npz: y_test must hold integer class labels, got dtype bool"),
    (dict(x_test=np.zeros((0, 32, 32, 3), np.uint8), y_test=np.zeros(0, np.int64)), r"bad.npz: the test split holds no images"),
])
def test_npz_with_labels_that_are_not_classes_or_an_empty_split_is_refused(tmp_path, bad, message):
    """Float labels would be truncated (6.7 -> 6) and bools read as 0/1 without a word; an empty test split
    would train a whole epoch and then divide by zero in evaluation."""
    path = tmp_path / "bad.npz"
    split = tiny_split(4)
    np.savez(path, **{**dict(x_train=split.images, y_train=split.labels, x_test=split.images, y_test=split.labels), **bad})
    with pytest.raises(DataError, match=message):
        load_splits("cifar10", num_classes=10, path=str(path))


def test_truncated_npz_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.npz"
    split = tiny_split(4)
    np.savez(path, x_train=split.images, y_train=split.labels, x_test=split.images, y_test=split.labels)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="cannot read .*cut.npz"):
        load_splits("cifar10", num_classes=10, path=str(path))


def test_missing_cifar_offline_says_how_to_point_at_a_copy(tmp_path):
    """With dataset.download=false the way out is our key, not torchvision's argument (download=True)."""
    with pytest.raises(DataError, match="point dataset.root at a directory") as error:
        load_splits("cifar100", num_classes=100, root=str(tmp_path), download=False)
    assert str(error.value).endswith("or let it download: dataset.download=true") and "download=True" not in str(error.value)


def test_loads_that_may_download_into_one_root_take_turns(tmp_path, monkeypatch):
    """Two sweep jobs starting at once on one dataset.root: the second waits on root/.download.lock until
    the first has built its datasets (torchvision's download and extraction happen in the constructor; here
    a fake that only notes entering and leaving). Two threads stand in for the two processes: flock locks
    taken through two separately opened files exclude each other within one process too."""
    from torchvision import datasets

    events = []  # list.append is atomic under the GIL

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            events.append("enter")
            time.sleep(0.2)  # long enough for the other thread to arrive, were it let in
            events.append("leave")
            self.data, self.targets = np.zeros((2, 32, 32, 3), np.uint8), [0, 1]

    monkeypatch.setattr(datasets, "CIFAR10", FakeCIFAR10)
    root = tmp_path / "data"  # missing: the lock creates it
    with ThreadPoolExecutor(2) as pool:
        loads = [pool.submit(load_splits, "cifar10", num_classes=10, root=str(root), download=True) for _ in range(2)]
        for load in loads:
            load.result()
    assert events == ["enter", "leave"] * 4  # train and test split of each load, never two at once


def test_a_root_that_cannot_be_written_loads_without_a_lock(tmp_path, monkeypatch):
    """A shared read-only copy of CIFAR with download=true (the default): no lock file can be made there,
    and none is needed, since nothing can be downloaded into it; the verified copy is read as before."""
    from torchvision import datasets

    from anode_bench import data

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            self.data, self.targets = np.zeros((2, 32, 32, 3), np.uint8), [0, 1]

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(args[0]))

    monkeypatch.setattr(datasets, "CIFAR10", FakeCIFAR10)
    monkeypatch.setattr(data, "open", read_only, raising=False)  # the lock file's open
    train, test = load_splits("cifar10", num_classes=10, root=str(tmp_path), download=True)
    assert len(train.labels) == len(test.labels) == 2
    assert not (tmp_path / ".download.lock").exists()
