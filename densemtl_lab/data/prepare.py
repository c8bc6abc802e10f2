"""Prepare a downloaded real dataset: check it, list its splits, write a manifest, optionally cache it.

`data_scripts/prepare_<dataset>.py ROOT [--out OUT] [--size H W] ...` are thin wrappers over `main`.
The loader itself does the checking (every missing archive is named with where to get it; every
missing file of a split is named), so what passes here also loads in training. Output under OUT:

    splits/<split>.txt         the split's sample names, one a line (sorted as the loader serves them)
    manifest.json              dataset, loader options, class names and palette, and per split: the
                               count, a sha256 of the file listing (paths and sizes; of every file's
                               bytes too with --hash-files), and reader counts (e.g. VKITTI2 pixels of
                               unknown colours mapped to ignore with --unknown-colours ignore)
    cache/settings.json        with --size: the dataset, size and options the cache was made with
    cache/<split>/<name>.npz   with --size: one sample resized, as the loader returns it before
                               deriving normals/edges: image uint8 H x W x 3 (the antialiased resize
                               rounded to 8 bits), semseg uint8, depth float32 metres, provided
                               normals float32 H x W x 3 and edges uint8, K float32, and the
                               reader's counts as `count__<key>` scalars
`PreparedDataset(OUT, split)` reads the cache back as data-contract samples.

Every file is written atomically (a temporary file, then a rename), so an interrupted run leaves
no half-written file, and a re-run skips the samples already cached.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from densemtl_lab.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic
from densemtl_lab.data.cityscapes import Cityscapes
from densemtl_lab.data.nyuv2 import NYUv2
from densemtl_lab.data.real_common import (
    Archive,
    DatasetError,
    RawSample,
    RealDataset,
    SampleFiles,
    listing_sha256,
)
from densemtl_lab.data.synthia import Synthia
from densemtl_lab.data.vkitti2 import VirtualKitti2
from densemtl_lab.tasks import TASK_ORDER, TASKS

DATASETS: dict[str, type[RealDataset]] = {
    "cityscapes": Cityscapes, "synthia": Synthia, "vkitti2": VirtualKitti2, "nyuv2": NYUv2,
}
MANIFEST_VERSION = 1
COUNT_PREFIX = "count__"  # npz entries holding the reader's counts of a cached sample


class PrepareError(DatasetError):
    """An output folder that cannot be used as asked."""


@dataclass
class PrepareConfig:
    """What to prepare and where."""

    dataset: str  # a key of DATASETS
    root: Path  # the downloaded dataset
    out: Path  # where split lists, manifest and cache go
    size: tuple[int, int] | None = None  # cache the samples resized to (H, W); None: no cache
    splits: tuple[str, ...] = ("train", "val")
    options: dict[str, object] = field(default_factory=dict)  # the loader's keyword options
    verify: bool = False  # read every sample even without a cache (surfaces unreadable files)
    hash_files: bool = False  # sha256 of every file's bytes (slow on the full datasets)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise PrepareError(f"dataset={self.dataset!r} is unknown; use one of {', '.join(DATASETS)}")
        self.root, self.out = Path(self.root), Path(self.out)

    def options_json(self) -> dict[str, object]:
        """The loader options as they are recorded in JSON (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in sorted(self.options.items())}


# --- files ----------------------------------------------------------------------------------------

def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- the cache ------------------------------------------------------------------------------------

def _cache_arrays(sample: dict[str, object]) -> dict[str, np.ndarray]:
    """A resized sample (tensors) -> the arrays stored in its .npz."""
    arrays = {"image": (sample["image"].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8),
              "K": sample["K"].numpy().astype(np.float32)}
    arrays.update({task.label_key: task.cache_array(sample[task.label_key])  # each task's storage layout
                   for task in TASKS.values() if task.label_key in sample})
    return arrays


def cache_path(out: Path, split: str, name: str) -> Path:
    """Where sample `name` of `split` is cached under the output folder `out`."""
    return out / "cache" / split / f"{name}.npz"


def _check_settings(config: PrepareConfig) -> None:
    """Record the cache's settings, or refuse a cache made with others."""
    path = config.out / "cache" / "settings.json"
    settings = {"dataset": config.dataset, "size": list(config.size),
                "options": config.options_json()}
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != settings:
            raise PrepareError(f"{path} records a cache made with {previous}, not {settings}; "
                               "pass another --out or delete that cache folder")
        return
    write_json_atomic(path, settings)


# --- preparing ------------------------------------------------------------------------------------

def prepare(config: PrepareConfig, progress: bool = True) -> dict[str, object]:
    """Check, list, optionally verify or cache each split, and write the manifest (returned)."""
    loader_class = DATASETS[config.dataset]
    if config.size is not None:
        _check_settings(config)
    manifest: dict[str, object] = {"version": MANIFEST_VERSION, "dataset": config.dataset,
                                   "root": str(config.root.resolve()), "size": config.size,
                                   "options": config.options_json(),
                                   "splits": _earlier_splits(config)}
    for split in config.splits:
        dataset = loader_class(config.root, split=split, size=config.size, **config.options)
        names = [sample.name for sample in dataset.samples]
        write_text_atomic(config.out / "splits" / f"{split}.txt", "".join(f"{n}\n" for n in names))
        entry: dict[str, object] = {"count": len(names),
                                    "listing_sha256": listing_sha256(dataset.samples, config.root)}
        if config.hash_files:
            entry["files_sha256"] = {
                path.relative_to(config.root).as_posix(): file_sha256(path)
                for sample in dataset.samples for path in sample.paths.values() if path.is_file()}
        if config.size is not None or config.verify:
            entry["counts"] = _read_split(dataset, config, split, progress)
        manifest["splits"][split] = entry
        manifest.update(domain=dataset.domain, num_classes=dataset.num_classes,
                        class_names=list(dataset.class_names),
                        palette=[list(colour) for colour in dataset.palette],
                        provided_tasks=list(dataset.provided_tasks))
    write_json_atomic(config.out / "manifest.json", manifest)
    return manifest


def _earlier_splits(config: PrepareConfig) -> dict[str, object]:
    """Split entries of an earlier run into the same folder with the same settings (kept)."""
    path = config.out / "manifest.json"
    if not path.is_file():
        return {}
    earlier = json.loads(path.read_text())
    same = (earlier.get("dataset") == config.dataset
            and earlier.get("size") == (None if config.size is None else list(config.size))
            and earlier.get("options") == config.options_json())
    return dict(earlier.get("splits", {})) if same else {}


def _read_split(dataset: RealDataset, config: PrepareConfig, split: str,
                progress: bool) -> dict[str, int]:
    """Read every sample of a split (caching it with --size; cached ones are skipped) and sum counts."""
    totals: dict[str, int] = {}
    samples = tqdm(range(len(dataset)), desc=f"{config.dataset} {split}", unit="img",
                   disable=not progress)
    for index in samples:
        path = cache_path(config.out, split, dataset.samples[index].name)
        if config.size is not None and path.is_file():
            counts = _cached_counts(path)
        else:
            sample, counts = dataset.read_resized(index)
            if config.size is not None:
                arrays = _cache_arrays(sample)
                arrays.update({COUNT_PREFIX + key: np.int64(value) for key, value in counts.items()})
                buffer = io.BytesIO()
                np.savez_compressed(buffer, **arrays)
                write_bytes_atomic(path, buffer.getvalue())
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
    return totals


def _cached_counts(path: Path) -> dict[str, int]:
    """The reader counts stored with a cached sample (so a resumed run reports them too)."""
    with np.load(path, allow_pickle=False) as stored:
        return {key[len(COUNT_PREFIX):]: int(stored[key])
                for key in stored.files if key.startswith(COUNT_PREFIX)}


# --- reading the cache back -----------------------------------------------------------------------

class PreparedDataset(RealDataset):
    """Data-contract samples from a cache written by `prepare` with a size."""

    def __init__(self, root: str | Path, split: str = "train", size: tuple[int, int] | None = None,
                 tasks: str | Iterable[str] | None = None,
                 transform: Callable[[dict], dict] | None = None) -> None:
        manifest_path = Path(root) / "manifest.json"
        if not manifest_path.is_file():
            raise DatasetError(f"{manifest_path} is missing; run data_scripts/prepare_<dataset>.py "
                               f"ROOT --out {root} --size H W first")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("size") is None:
            raise DatasetError(f"{manifest_path} describes no cache; re-run prepare with --size H W")
        self.splits = tuple(manifest["splits"])
        self.domain = manifest["domain"]
        self.provided_tasks = tuple(manifest["provided_tasks"])
        self.num_classes = manifest["num_classes"]
        self.class_names = tuple(manifest["class_names"])
        self.palette = tuple(tuple(colour) for colour in manifest["palette"])
        self.dataset_name = manifest["dataset"]
        super().__init__(root, split, size, tasks, transform)

    def archives(self) -> dict[str, Archive]:
        how = (f"re-run data_scripts/prepare_{self.dataset_name}.py ROOT --out {self.root} "
               "--size H W (it resumes)")
        return {role: Archive("cache/{split}", "", "", how) for role in ("image",) + TASK_ORDER}

    def list_samples(self) -> list[SampleFiles]:
        names = (self.root / "splits" / f"{self.split}.txt").read_text().split()
        return [SampleFiles(name, {"image": cache_path(self.root, self.split, name)}) for name in names]

    def read_raw(self, sample: SampleFiles) -> RawSample:
        with np.load(sample.paths["image"], allow_pickle=False) as stored:
            maps = {label: stored[label] for label in TASK_ORDER
                    if label in stored.files and self.reads(label)}
            return RawSample(image=stored["image"], K=stored["K"], **maps)


# --- the command line -----------------------------------------------------------------------------

#: Dataset -> its loader options on the command line: (flag, argparse keywords).
OPTIONS: dict[str, list[tuple[str, dict[str, object]]]] = {
    "cityscapes": [("--num-classes", {"type": int, "choices": (19, 16, 13, 8)}),
                   ("--image-dir", {"choices": ("leftImg8bit", "leftImg8bit_small")}),
                   ("--sequence", {"action": "store_true", "default": None,
                                   "help": "check (and with --verify read) frames -1 and +1 of every image in "
                                           "leftImg8bit_sequence/ (self-supervised depth; not with --size)"})],
    "synthia": [("--labels-dir", {"choices": ("GT/LABELS", "parsed_LABELS")}),
                ("--depth-dir", {"choices": ("Depth/Depth", "Depth")}),
                ("--split-seed", {"type": int})],
    "vkitti2": [("--num-classes", {"type": int, "choices": (14, 8)}),
                ("--variation", {}), ("--camera", {}), ("--scenes", {"nargs": "+"}),
                ("--split-seed", {"type": int}),
                ("--unknown-colours", {"choices": ("error", "ignore")})],
    "nyuv2": [],
}


def build_parser(dataset: str) -> argparse.ArgumentParser:
    """The command line of `data_scripts/prepare_<dataset>.py`."""
    parser = argparse.ArgumentParser(
        prog=f"prepare_{dataset}.py",
        description=f"Check a downloaded {dataset} folder, write split lists and a manifest, "
                    "and optionally cache it resized.")
    parser.add_argument("root", type=Path, help="the folder you extracted the archives into")
    parser.add_argument("--out", type=Path, default=Path("data") / "prepared" / dataset,
                        help="where split lists, manifest and cache go (default: %(default)s)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                        help="cache every sample resized to H x W")
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    parser.add_argument("--verify", action="store_true", help="read every sample (no cache)")
    parser.add_argument("--hash-files", action="store_true", help="sha256 of every file's bytes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    for flag, keywords in OPTIONS[dataset]:
        parser.add_argument(flag, **keywords)
    return parser


def main(dataset: str, argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of `data_scripts/prepare_<dataset>.py`; returns the exit status."""
    args = build_parser(dataset).parse_args(argv)
    options = {flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_"))
               for flag, _ in OPTIONS[dataset]}
    if options.get("sequence") and args.size is not None:
        print("error: --sequence with --size: a resized cache holds single frames; check the sequences without "
              "--size and train from the extracted folder", file=sys.stderr)
        return 2
    try:
        config = PrepareConfig(dataset, args.root, args.out,
                               size=None if args.size is None else tuple(args.size),
                               splits=tuple(args.splits),
                               options={key: value for key, value in options.items() if value is not None},
                               verify=args.verify, hash_files=args.hash_files)
        manifest = prepare(config, progress=not args.quiet)
    except (DatasetError, OSError) as error:  # OSError: e.g. an unwritable --out
        print(f"error: {error}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{split} {entry['count']}" for split, entry in manifest["splits"].items())
    print(f"{dataset}: {counts}; wrote {config.out / 'manifest.json'}")
    return 0
