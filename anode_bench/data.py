"""CIFAR held on the device: the whole split is uploaded once as uint8 [N, 32, 32, 3]; every batch is
cut from a device permutation, then cropped (pad 4), flipped and normalized on the device, so the
loader never waits on the host (after airbench's CifarLoader).

Sources: torchvision's CIFAR10/CIFAR100 (downloaded into `root` unless already there), an .npz
file with arrays x_train [N, 32, 32, 3] uint8, y_train [N], x_test, y_test, or `synthetic`, a
generated learnable CIFAR-shaped task for offline smoke runs and tests.
"""
from __future__ import annotations

import contextlib
import fcntl
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

NUM_CLASSES = {"cifar10": 10, "cifar100": 100}


class DataError(RuntimeError):
    """A dataset could not be loaded: the message says which file or root, and what to do."""


@dataclass
class Split:
    images: np.ndarray  # [N, 32, 32, 3] uint8, HWC
    labels: np.ndarray  # [N] int64


@contextlib.contextmanager
def download_lock(root: str):
    """An exclusive flock on root/.download.lock (root created if need be): other processes wait here
    until this one leaves the block, or dies. A root this process cannot write to gets no lock: nothing
    can be downloaded into it, so a verified copy there is only read."""
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        lock = open(Path(root) / ".download.lock", "a")
    except OSError:
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def load_torchvision(name: str, root: str, download: bool) -> tuple[Split, Split]:
    """torchvision's CIFAR10/CIFAR100 in `root`, downloaded and extracted there first if `download` and
    missing. Jobs that start together on one root (a local_parallel sweep, a SLURM array) would download
    into it at once and corrupt each other's files, so a download takes turns under download_lock: the
    first job fetches, the next finds the files verified and torchvision skips the download."""
    from torchvision import datasets

    dataset_class = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    try:
        with download_lock(root) if download else contextlib.nullcontext():  # without download nothing is written
            train, test = (dataset_class(root, train=flag, download=download) for flag in (True, False))
    except Exception as error:  # offline download, missing or broken copy: all end in the same advice
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        reason = reason.replace(" You can use download=True to download it", "")  # its argument; ours is below
        raise DataError(
            f"could not load {name} from dataset.root={root} ({reason}); point dataset.root at a directory "
            f"holding torchvision's {name} files, or set dataset.path=FILE.npz"
            + ("" if download else ", or let it download: dataset.download=true")
        ) from None
    return (Split(np.asarray(s.data), np.asarray(s.targets, dtype=np.int64)) for s in (train, test))


def load_npz(path: str) -> tuple[Split, Split]:
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path) as arrays:
            missing = [k for k in keys if k not in arrays]
            if missing:
                raise DataError(f"{path} lacks arrays {missing}; it needs {', '.join(keys)}")
            x_train, y_train, x_test, y_test = (arrays[k] for k in keys)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read {path}: {error}") from None
    for key, labels in (("y_train", y_train), ("y_test", y_test)):
        if not np.issubdtype(labels.dtype, np.integer):  # float labels would be truncated, bools read as 0/1
            raise DataError(f"{path}: {key} must hold integer class labels, got dtype {labels.dtype}")
    return Split(x_train, y_train.astype(np.int64)), Split(x_test, y_test.astype(np.int64))


def make_synthetic(num_classes: int, train_size: int, test_size: int, seed: int = 0) -> tuple[Split, Split]:
    """A learnable CIFAR-shaped task: each class is a smooth random colour pattern, each image that
    pattern shifted by up to 4 pixels, scaled in contrast and covered in pixel noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(num_classes, 4, 4, 3))
    prototypes = np.kron(coarse, np.ones((1, 10, 10, 1)))[:, :40, :40]  # [K, 40, 40, 3]

    def split(size):
        labels = rng.integers(0, num_classes, size)
        dy, dx = rng.integers(0, 9, size), rng.integers(0, 9, size)
        rows = dy[:, None] + np.arange(32)
        cols = dx[:, None] + np.arange(32)
        patterns = prototypes[labels[:, None, None], rows[:, :, None], cols[:, None, :]]
        contrast = rng.uniform(0.5, 1.5, (size, 1, 1, 1))
        images = 128 + 40 * contrast * patterns + rng.normal(0, 30, (size, 32, 32, 3))
        return Split(np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64))

    return split(train_size), split(test_size)


def check_split(split: Split, num_classes: int, source: str, part: str) -> None:
    if len(split.labels) == 0:
        raise DataError(f"{source}: the {part} split holds no images")
    if split.images.ndim != 4 or split.images.shape[1:] != (32, 32, 3) or split.images.dtype != np.uint8:
        raise DataError(
            f"{source}: {part} images must be uint8 [N, 32, 32, 3], got {split.images.dtype} {list(split.images.shape)}"
        )
    if split.labels.shape != (len(split.images),):
        raise DataError(f"{source}: {part} has {len(split.images)} images but labels of shape {list(split.labels.shape)}")
    if len(split.labels) and (split.labels.min() < 0 or split.labels.max() >= num_classes):
        raise DataError(
            f"{source}: {part} labels must lie in 0..{num_classes - 1}, got {split.labels.min()}..{split.labels.max()}"
        )


def load_splits(
    name: str,
    *,
    num_classes: int,
    root: str = "data",
    path: str | None = None,
    download: bool = True,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
) -> tuple[Split, Split]:
    """Train and test splits from the named source; `train_size`/`test_size` keep a leading subset."""
    if name == "synthetic":
        train, test = make_synthetic(num_classes, train_size or 2048, test_size or 512, seed)
        source = "synthetic"
    elif path is not None:
        train, test = load_npz(path)
        source = path
    elif name in NUM_CLASSES:
        train, test = load_torchvision(name, root, download)
        source = f"{name} in {root}"
    else:
        raise DataError(f"dataset {name!r} unknown; choose from cifar10, cifar100, synthetic")
    train = Split(train.images[:train_size], train.labels[:train_size])
    test = Split(test.images[:test_size], test.labels[:test_size])
    for split, part in ((train, "train"), (test, "test")):
        check_split(split, num_classes, source, part)
    return train, test


class DeviceLoader:
    """Batches from a split held on `device`: yields (images [B, 3, 32, 32] normalized float, labels [B]).

    With `augment`, each batch gets a random crop of the 4-pixel zero-padded image and a random
    horizontal flip, drawn from `generator` (a torch.Generator on `device`) on the device.
    `shard=(rank, world_size)` yields only that rank's contiguous slice of every batch; the
    permutation and the augmentation are drawn for the whole batch first, so ranks seeded alike
    split exactly the batches a single process would train on.
    """

    def __init__(self, split: Split, batch_size: int, device, *, mean, std, augment: bool, shuffle: bool,
                 drop_last: bool, generator: torch.Generator | None = None, dtype=torch.float32,
                 shard: tuple[int, int] = (0, 1)):
        self.device = torch.device(device)
        self.images = torch.from_numpy(split.images).to(self.device).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW
        self.labels = torch.from_numpy(split.labels).to(self.device)
        self.batch_size, self.augment, self.shuffle, self.drop_last = batch_size, augment, shuffle, drop_last
        self.generator, self.dtype, self.shard = generator, dtype, shard
        self.mean = torch.as_tensor(mean, device=self.device, dtype=dtype).view(1, 3, 1, 1) * 255
        self.std = torch.as_tensor(std, device=self.device, dtype=dtype).view(1, 3, 1, 1) * 255

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        order = (
            torch.randperm(n, device=self.device, generator=self.generator)
            if self.shuffle
            else torch.arange(n, device=self.device)
        )
        rank, world_size = self.shard
        for i in range(len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            draws = self.draw_crops(len(index)) if self.augment else ()
            index, *draws = (x.tensor_split(world_size)[rank] for x in (index, *draws))
            images = self.images[index]
            if self.augment:
                images = self.crop_and_flip(images, *draws)
            yield (images.to(self.dtype) - self.mean) / self.std, self.labels[index]

    def draw_crops(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image: crop offsets dy, dx in 0..8 and a left-right flip flag, from the generator."""
        dy, dx = (torch.randint(0, 9, (batch,), device=self.device, generator=self.generator) for _ in range(2))
        flip = torch.rand(batch, device=self.device, generator=self.generator) < 0.5
        return dy, dx, flip

    def crop_and_flip(self, images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """The 32x32 crop at (dy, dx) of each zero-padded 40x40 image, mirrored where `flip`."""
        batch = len(images)
        padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
        offsets = torch.arange(32, device=self.device)
        rows = (dy[:, None] + offsets)[:, None, :, None]
        cols = (dx[:, None] + offsets)[:, None, None, :]
        cols = torch.where(flip[:, None, None, None], 31 + 2 * dx[:, None, None, None] - cols, cols)  # mirror within the crop
        channels = torch.arange(3, device=self.device)[None, :, None, None]
        return padded[torch.arange(batch, device=self.device)[:, None, None, None], channels, rows, cols]


def channel_stats(split: Split) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the training images on the [0, 1] scale."""
    pixels = split.images.reshape(-1, 3).astype(np.float64) / 255
    return pixels.mean(0).tolist(), pixels.std(0).tolist()
