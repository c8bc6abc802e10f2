"""The one atomic writer: whole files or none, the usual permission bits, the rename made durable."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import matplotlib
import pytest

from densemtl_lab import atomic
from densemtl_lab.atomic import atomic_path, write_bytes_atomic, write_json_atomic

matplotlib.use("Agg")
PACKAGE = Path(__file__).resolve().parents[1] / "densemtl_lab"


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it after."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_new_file_gets_the_mode_that_open_would_give_it(tmp_path, umask, mask, mode):
    umask(mask)
    path = write_json_atomic(tmp_path / "metrics.json", {"a": 1})
    assert stat.S_IMODE(path.stat().st_mode) == mode
    with open(tmp_path / "plain", "w"):
        pass
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == mode


def test_an_existing_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "shared.json"
    path.write_text("{}")
    path.chmod(0o660)
    write_json_atomic(path, {"b": 2})
    assert stat.S_IMODE(path.stat().st_mode) == 0o660 and path.read_text() == '{\n  "b": 2\n}\n'


def test_the_file_and_its_folder_are_flushed_to_disk(tmp_path, monkeypatch):
    flushed = []
    real_fsync = os.fsync

    def record(descriptor: int) -> None:
        flushed.append(stat.S_ISDIR(os.fstat(descriptor).st_mode))
        real_fsync(descriptor)

    monkeypatch.setattr(atomic.os, "fsync", record)
    write_bytes_atomic(tmp_path / "x.bin", b"data")
    assert flushed == [False, True]  # the content before the rename, the folder after it


@pytest.mark.parametrize("when", ["writing", "renaming"])
def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, when):
    path = write_bytes_atomic(tmp_path / "x.bin", b"old")
    if when == "renaming":
        monkeypatch.setattr(atomic.os, "replace", _interrupt)
        with pytest.raises(KeyboardInterrupt):
            write_bytes_atomic(path, b"new")
    else:
        with pytest.raises(KeyboardInterrupt), atomic_path(path) as temporary:
            temporary.write_bytes(b"ne")
            _interrupt()
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


#: Writes outside atomic.py that are not results: each with why it may write directly.
_DIRECT_WRITES_ALLOWED = {
    "data/fixtures.py": "builds test fixtures in a fresh folder the caller owns",
    "data/toy_store.py": "tempfile.TemporaryFile only probes that the folder is writable",
}
_DIRECT_WRITE = re.compile(r"\.write_(?:text|bytes)\(|\bos\.replace\(|\bmkstemp\(|nbformat\.write\(|"
                           r"\.savefig\((?!buffer|temporary)|(?<!torch)(?<!checkpoints)\.save\((?!buffer|picture)|np\.save\(|open\([^)]*[\"'][wa]b?[\"']")


def test_every_file_the_package_writes_goes_through_the_atomic_writer():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name == "atomic.py" or name in _DIRECT_WRITES_ALLOWED:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if _DIRECT_WRITE.search(line) and not line.lstrip().startswith("#"):
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_a_lessons_saved_figure_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    import torch

    from densemtl_lab.config import get_profile
    from densemtl_lab.notebook import Lab

    lab = Lab("00_test", get_profile("smoke"), torch.device("cpu"), 0, tmp_path)
    figure, axes = plt.subplots()
    axes.set_title("first")
    path = lab.save_figure(figure, "curve")
    before = path.read_bytes()
    axes.set_title("second")
    monkeypatch.setattr(atomic.os, "replace", _interrupt)
    with pytest.raises(KeyboardInterrupt):
        lab.save_figure(figure, "curve")
    plt.close(figure)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["curve.png"]
