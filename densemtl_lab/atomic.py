"""Atomic file writes: a crash or Ctrl-C leaves either the old file or the new one, never half of one.

Every file the package writes goes through `atomic_path`: the content goes to a temporary file beside
the target, is flushed to disk, takes the target's mode (an existing file keeps its own; a new one gets
the usual 0o666 less the umask, as `open()` would give it), is renamed over the target, and the folder
is flushed so that the rename itself survives a power cut.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

#: The mode `open()` asks for when it creates a file; the umask then takes bits away.
_NEW_FILE_MODE = 0o666


def _current_umask() -> int:
    """The process umask (read by setting and restoring it: POSIX has no read-only call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mode_for(target: Path) -> int:
    """An existing file's permission bits, else those a new file would get."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return _NEW_FILE_MODE & ~_current_umask()


def _fsync_path(path: Path) -> None:
    """Flush a written file (or a folder's entries) to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; write it inside the block, and it replaces `path` at the end.

    For writers that want a file name (Pillow, matplotlib, nbformat, zipfile). If the block raises, the
    temporary file is deleted and `path` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        _fsync_path(temporary)
        os.chmod(temporary, _mode_for(target))
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_path(target.parent)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Atomic UTF-8 text write."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Atomic JSON write (indented, keys in insertion order, NaN written as null)."""
    return write_text_atomic(path, json.dumps(_finite(obj), indent=2) + "\n")


def _finite(obj: Any) -> Any:
    """Replace NaN and infinities by None so the file is standard JSON."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(value) for value in obj]
    return obj
