"""The on-disk format of a toy dataset: sharded zips of .npy arrays, written atomically, resumable.

A dataset folder holds:

    manifest.json      {"format": "densemtl-lab-toy", "version": 1, "config": {length, size, domain,
                        severity, seed, split}, "shard_size": S, "num_shards": N, "complete": bool}
    shard-00000.npz    samples 0 .. S-1
    shard-00001.npz    samples S .. 2S-1, and so on

Each shard is a zip archive (DEFLATE, level 1) that `np.load` opens, with one member per sample
and array, named "<index:06d>/<array>" (index = the global sample index):

    image    uint8   [3, H, W]   RGB; the renderer already quantises images to 8 bits
    semseg   uint8   [H, W]      Cityscapes train ids
    depth    float32 [H, W]      metric z-depth, 0 on sky and beyond 80 m
    normals  float32 [3, H, W]   unit normals in the camera frame, 0 on sky
    edges    uint8   [H, W]      0 or 1
    K        float32 [3, 3]      intrinsics at H x W

Nothing is quantised on the way to disk, so a sample read back is byte-identical to the rendered
one. About 90 KB per 128x256 sample (2,000 samples: about 180 MB).

Writing (`write_toy_dataset`): the manifest is written first with "complete": false. Each shard is
written to a hidden temp file (".shard-00000.npz.<random>.tmp") beside its final name and renamed into place,
so a shard file is either whole or absent. Running again with the same settings resumes: finished
shards are kept, temp files left by an interrupted run are deleted, and only the missing shards
are rendered; the manifest then says "complete": true. Any other non-empty folder (including a
complete dataset) is refused unless `overwrite=True`, which deletes the dataset files it finds
there (manifest, shards, temp files), leaves other files alone and renders everything again.
"""

from __future__ import annotations

import json
import multiprocessing
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from densemtl_lab.atomic import atomic_path, write_text_atomic
from densemtl_lab.runtime import tune_cpu_allocator

FORMAT = "densemtl-lab-toy"
VERSION = 2  # 2: depth beyond 80 m is 0 (unknown), no longer clamped to 80 m
MANIFEST = "manifest.json"
ARRAY_KEYS: tuple[str, ...] = ("image", "semseg", "depth", "normals", "edges", "K")


class ToyStoreError(ValueError):
    """A toy dataset folder that cannot be written or read."""


class ArraySource(Protocol):
    """What the writer renders from: a dataset with a dataclass `config` and numpy samples."""

    config: Any

    def __len__(self) -> int: ...

    def arrays(self, index: int) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class WriteReport:
    """What one `write_toy_dataset` call did."""

    root: Path
    written: tuple[int, ...]  # shards rendered by this call
    skipped: tuple[int, ...]  # shards already on disk (a resumed run)
    images_written: int
    seconds: float


def shard_name(shard: int) -> str:
    """File name of shard number `shard`."""
    return f"shard-{shard:05d}.npz"


def _dataset_files(root: Path) -> list[Path]:
    """The files of a toy dataset in `root`: manifest, shards and temp files."""
    patterns = (MANIFEST, "shard-*.npz", ".shard-*.tmp", f".{MANIFEST}.*tmp")
    return sorted({path for pattern in patterns for path in root.glob(pattern)})


def _remove_temp_files(root: Path) -> None:
    for path in root.glob(".*.tmp"):
        path.unlink(missing_ok=True)


def write_shard(path: Path, samples: Iterable[tuple[int, dict[str, np.ndarray]]]) -> None:
    """Write (index, arrays) pairs as one shard archive at `path`, atomically."""
    with atomic_path(path) as temporary, zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED,
                                                           compresslevel=1) as archive:
        for index, arrays in samples:
            for key in ARRAY_KEYS:
                with archive.open(f"{index:06d}/{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]), allow_pickle=False)


def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    write_text_atomic(root / MANIFEST, json.dumps(manifest, indent=2))


def _read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest in `root`, or None when there is none or it is not a toy dataset's."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None
    return manifest


def _same_settings(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("format", "version", "config", "shard_size", "num_shards")
    return all(a.get(key) == b.get(key) for key in keys)


def _shard_range(shard: int, shard_size: int, length: int) -> range:
    return range(shard * shard_size, min((shard + 1) * shard_size, length))


def _prepare_folder(root: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    """Create or check `root`: writable, and empty, resumable or overwritten."""
    if root.exists() and not root.is_dir():
        raise ToyStoreError(f"output folder {root} is a file; choose a folder path")
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ToyStoreError(f"cannot write to output folder {root} ({reason}); choose a writable folder") from error
    if not any(root.iterdir()):
        return
    if overwrite:
        for path in _dataset_files(root):
            path.unlink()
        return
    existing = _read_manifest(root)
    same = existing is not None and _same_settings(existing, manifest)
    if same and not existing["complete"]:
        return  # resume
    if same:
        raise ToyStoreError(f"output folder {root} already holds this complete toy dataset; "
                            "use --overwrite (overwrite=True) to render it again, or another folder")
    raise ToyStoreError(f"output folder {root} is not empty; use --overwrite (overwrite=True) to replace "
                        "the toy dataset files in it, or choose an empty folder")


def _init_worker() -> None:
    torch.set_num_threads(1)  # the workers already use every core
    tune_cpu_allocator()  # every sample allocates the same large arrays: keep them mapped


def _render_shard(source: ArraySource, root: Path, shard_size: int, shard: int) -> int:
    indices = _shard_range(shard, shard_size, len(source))
    write_shard(root / shard_name(shard), ((index, source.arrays(index)) for index in indices))
    return shard


def write_toy_dataset(
    root: str | Path, source: ArraySource, shard_size: int = 100, workers: int = 2,
    overwrite: bool = False, progress: bool = True, on_shard_written: Callable[[int], None] | None = None,
) -> WriteReport:
    """Render every sample of `source` (a ToyScenes) into `root` in the format above.

    `workers` processes render shards in parallel; `on_shard_written(shard)` is called in this
    process after each shard lands (a test hook: raising there interrupts the run).
    """
    started = time.perf_counter()
    root = Path(root)
    if shard_size < 1:
        raise ToyStoreError(f"shard_size={shard_size}: must be at least 1")
    if workers < 1:
        raise ToyStoreError(f"workers={workers}: must be at least 1")
    length = len(source)
    num_shards = -(-length // shard_size)
    manifest = {"format": FORMAT, "version": VERSION, "config": json.loads(json.dumps(asdict(source.config))),
                "shard_size": shard_size, "num_shards": num_shards, "complete": False}
    _prepare_folder(root, manifest, overwrite)
    _remove_temp_files(root)
    _write_manifest(root, manifest)

    on_disk = [(root / shard_name(shard)).is_file() for shard in range(num_shards)]
    done = [shard for shard in range(num_shards) if on_disk[shard]]
    missing = [shard for shard in range(num_shards) if not on_disk[shard]]
    render = partial(_render_shard, source, root, shard_size)
    pool = None
    if workers > 1 and len(missing) > 1:
        pool = multiprocessing.get_context().Pool(min(workers, len(missing)), initializer=_init_worker)
    written: list[int] = []
    images_written = 0
    initial = sum(len(_shard_range(shard, shard_size, length)) for shard in done)
    try:
        with tqdm(total=length, initial=initial, unit="img", desc=f"toy -> {root.name}", disable=not progress) as bar:
            for shard in (pool.imap_unordered(render, missing) if pool is not None else map(render, missing)):
                count = len(_shard_range(shard, shard_size, length))
                written.append(shard)
                images_written += count
                bar.update(count)
                if on_shard_written is not None:
                    on_shard_written(shard)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        _remove_temp_files(root)
    _write_manifest(root, {**manifest, "complete": True})
    return WriteReport(root, tuple(sorted(written)), tuple(done), images_written, time.perf_counter() - started)


class ToyStore:
    """Reads the samples of a toy dataset folder written by `write_toy_dataset`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest = _read_manifest(self.root)
        if manifest is None:
            raise ToyStoreError(f"no toy dataset at {self.root}: {self.root / MANIFEST} is missing or not a "
                                "toy manifest; write one with data_scripts/make_toy_dataset.py")
        if manifest.get("version") != VERSION:
            raise ToyStoreError(f"{self.root / MANIFEST} has format version {manifest.get('version')!r}, "
                                f"this code reads version {VERSION}; write the dataset again")
        if not manifest["complete"]:
            raise ToyStoreError(f"toy dataset at {self.root} is unfinished; run make_toy_dataset.py again "
                                "with the same arguments to resume it")
        self.config: dict[str, Any] = manifest["config"]
        self.shard_size: int = manifest["shard_size"]

    def __len__(self) -> int:
        return int(self.config["length"])

    def arrays(self, index: int) -> dict[str, np.ndarray]:
        """The stored arrays of sample `index` (keys `ARRAY_KEYS`)."""
        path = self.root / shard_name(index // self.shard_size)
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {key: archive[f"{index:06d}/{key}"] for key in ARRAY_KEYS}
        except FileNotFoundError as error:
            raise ToyStoreError(f"{path} is missing; write the dataset again with --overwrite") from error
        except (KeyError, zipfile.BadZipFile, ValueError) as error:
            raise ToyStoreError(f"{path} is damaged ({error}); write the dataset again with --overwrite") from error
