"""The README, docs/ and the committed reports point at files that exist: every relative link or
image, and every inline `path` into the repository's own folders. A renamed script or a moved
report would otherwise leave the README quoting a command or a figure nobody can find."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")
INLINE_PATH = re.compile(r"`((?:anode_bench|configs|docs|outputs|scripts|tests)/[^`\s]*)`")
# What a run writes (Hydra's run and sweep dirs, the GPU script's output), not what the repository holds.
RUN_OUTPUTS = ("outputs/multirun/", "outputs/gpu_figures/", "outputs/gradcheck/")


def markdown_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the committed Markdown files cannot be listed", allow_module_level=True)
    return [ROOT / name for name in listed.stdout.split() if "/runs/" not in name]


def dangling(doc: Path) -> list[str]:
    """The link targets (relative to the document) and inline repository paths (relative to the
    root) in `doc` that name no file or folder."""
    text = doc.read_text()
    missing = []
    for target in LINK.findall(text):
        if "://" in target or target.startswith(("#", "mailto:")):
            continue
        if not (doc.parent / target.split("#")[0]).exists():
            missing.append(target)
    for path in INLINE_PATH.findall(text):
        if "<" in path or path.startswith(RUN_OUTPUTS):
            continue
        if not (ROOT / path).exists():
            missing.append(path)
    return missing


def test_markdown_files_are_found():
    names = {doc.relative_to(ROOT).as_posix() for doc in markdown_files()}
    assert {"README.md", "docs/README.md", "outputs/README.md"} <= names


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda doc: doc.relative_to(ROOT).as_posix())
def test_links_and_paths_exist(doc):
    assert dangling(doc) == [], f"{doc.relative_to(ROOT)} points at what does not exist"
