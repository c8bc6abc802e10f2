"""Shared machinery of the real-dataset loaders (docs/real_datasets.md; the official `dataset/base.py`).

A loader subclasses `RealDataset` and answers three questions: which archives its root must hold
(`archives`), which files make up a split (`list_samples`), and how to read one sample's files
into a `RawSample` at their native size (`read_raw`). This module does the rest, the same way for
every dataset: it checks the folders and files up front, turns a raw sample into the data
contract, resizes it to the working size (RGB antialiased, labels nearest, K scaled), derives
normals and edges that the dataset lacks from metric depth and labels *after* resizing, and
applies the user's transform.

Deviation from the reference, on purpose: derived normals use metric z-depth and K scaled to the
working size; DenseMTL feeds normalised inverse depth and full-resolution K (non-metric normals).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from densemtl_lab.data.geometry import edges_from_labels, normals_from_depth, scale_intrinsics
from densemtl_lab.data.transforms import Resize
from densemtl_lab.tasks import IGNORE_INDEX, TASK_ORDER, parse_tasks

#: The fraction of a shuffled listing that forms the train split (the reference's 80/20).
TRAIN_FRACTION = 0.8


class DatasetError(ValueError):
    """A dataset folder or file that is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class Archive:
    """Where one kind of file lives under the root, and the download that provides it."""

    folder: str  # a glob pattern relative to the root, formatted with the loader's layout values
    archive: str
    source: str
    how: str = ""  # how to get the files, when that is not extracting `archive`

    def hint(self) -> str:
        """What to do to get these files."""
        return self.how or f"extract {self.archive} (from {self.source})"


@dataclass(frozen=True)
class SampleFiles:
    """The files of one sample: a role (e.g. "image", "semseg", "camera") -> path."""

    name: str
    paths: Mapping[str, Path]


@dataclass
class RawSample:
    """One sample as read from disk, at the files' native size (the image's H x W)."""

    image: np.ndarray  # H, W, 3 uint8 RGB
    K: np.ndarray  # 3, 3 intrinsics at the image's size
    semseg: np.ndarray | None = None  # H, W class ids, IGNORE_INDEX where ignored
    depth: np.ndarray | None = None  # H, W metres, 0 where invalid
    normals: np.ndarray | None = None  # H, W, 3 provided normals (NYUv2 only)
    edges: np.ndarray | None = None  # H, W provided edges in {0, 1} (NYUv2 only)
    frames: dict[int, np.ndarray] | None = None  # frame id -> H, W, 3 uint8: the neighbours of a sequence sample
    counts: dict[str, int] = field(default_factory=dict)  # e.g. unknown-colour pixels


# --- reading files --------------------------------------------------------------------------------

def require_file(path: Path, hint: str) -> Path:
    """`path` if it is a file, else a DatasetError naming it and how to get it."""
    if not path.is_file():
        raise DatasetError(f"{path} is missing; {hint}")
    return path


def read_rgb(path: Path) -> np.ndarray:
    """An 8-bit RGB image (png or jpg) as H, W, 3 uint8."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path} is not a readable image ({error}); re-extract it") from error


def read_png(path: Path) -> np.ndarray:
    """A PNG with its bit depth and channels kept (16-bit stays uint16; colour comes as BGR)."""
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DatasetError(f"{path} is not a readable PNG; re-extract it")
    return array


def png_channel(array: np.ndarray, rgb_channel: int = 0) -> np.ndarray:
    """Channel `rgb_channel` (0 = R) of a `read_png` array; a single-channel PNG is returned as is.

    cv2 orders colour channels B, G, R(, A), so R is index 2 (Pillow would truncate 16-bit RGB).
    """
    if array.ndim == 2:
        return array
    return array[..., 2 - rgb_channel]


def read_npy(path: Path) -> np.ndarray:
    """A .npy array, never unpickling objects."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path} is not a readable .npy array ({error}); re-extract it") from error


def check_same_size(image_size: tuple[int, int], array: np.ndarray, path: Path) -> None:
    """Raise when a label map's size differs from its image's."""
    if tuple(array.shape[:2]) != tuple(image_size):
        raise DatasetError(
            f"{path} is {array.shape[1]}x{array.shape[0]} but its image is "
            f"{image_size[1]}x{image_size[0]}; the files do not belong together, re-extract them"
        )


def lookup_ids(raw: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """Map raw label ids through `mapping` (id -> train id); ids not in it become IGNORE_INDEX."""
    raw = raw.astype(np.int64)
    table = np.full(max(int(raw.max(initial=0)), max(mapping)) + 1, IGNORE_INDEX, dtype=np.int64)
    for source, target in mapping.items():
        table[source] = target
    return table[raw]


def seeded_split(names: Sequence[str], split: str, seed: int,
                 train_fraction: float = TRAIN_FRACTION) -> list[str]:
    """The reference's random 80/20 split, made reproducible: sort, seeded shuffle, cut.

    `split` is "train", "val" or "all" (every name, sorted; the UDA source set).
    """
    ordered = sorted(names)
    if split == "all":
        return ordered
    if split not in ("train", "val"):
        raise DatasetError(f"split={split!r} is unknown; use 'train', 'val' or 'all'")
    order = np.random.default_rng(seed).permutation(len(ordered))
    cut = int(round(train_fraction * len(ordered)))
    chosen = order[:cut] if split == "train" else order[cut:]
    return [ordered[i] for i in sorted(chosen)]


def listing_sha256(samples: Iterable[SampleFiles], root: Path) -> str:
    """A checksum of a split's file listing: each file's path relative to root and its size."""
    digest = hashlib.sha256()
    for sample in samples:
        for role in sorted(sample.paths):
            path = sample.paths[role]
            digest.update(f"{path.relative_to(root).as_posix()}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()


# --- the base dataset -----------------------------------------------------------------------------

class RealDataset(Dataset):
    """Base of the real-dataset loaders: returns data-contract samples (docs/real_datasets.md)."""

    domain: str
    #: Tasks read from files; the others of TASK_ORDER are derived (normals, edges).
    provided_tasks: tuple[str, ...] = ("semseg", "depth")
    #: Split names the loader accepts.
    splits: tuple[str, ...] = ("train", "val", "all")

    num_classes: int
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]

    def __init__(
        self,
        root: str | Path,
        split: str,
        size: tuple[int, int] | None,
        tasks: str | Iterable[str] | None = None,
        transform: Callable[[dict], dict] | None = None,
    ) -> None:
        self.root = Path(root)
        self._check_option("split", split, self.splits)
        self.split = split
        self.size = None if size is None else Resize(size).size
        self.tasks = TASK_ORDER if tasks is None else _parse_optional_tasks(tasks)
        self.transform = transform
        self._check_archives()
        self.samples = self.list_samples()
        if not self.samples:
            raise DatasetError(f"{self.root} holds no {type(self).__name__} samples for "
                               f"split={split!r}; check the root folder and the split")
        self._check_files()

    # What a subclass provides.
    def archives(self) -> dict[str, Archive]:
        """File role -> where it lives and which download provides it."""
        raise NotImplementedError

    def list_samples(self) -> list[SampleFiles]:
        """The sorted samples of `self.split` with the paths of every role they need."""
        raise NotImplementedError

    def read_raw(self, sample: SampleFiles) -> RawSample:
        """Read one sample's files (only the maps `self.reads` asks for)."""
        raise NotImplementedError

    def layout(self) -> dict[str, str]:
        """Values that fill the archives' folder patterns (e.g. split, variation)."""
        return {"split": self.split}

    # The shared machinery.
    def _check_option(self, parameter: str, value: object, allowed: Iterable[object]) -> None:
        """Raise a DatasetError naming `parameter` and its allowed values when `value` is not one."""
        allowed = tuple(allowed)
        if value not in allowed:
            raise DatasetError(f"{parameter}={value!r} is unknown for {type(self).__name__}; "
                               f"use one of {', '.join(map(str, allowed))}")

    @property
    def class_ids(self) -> tuple[int, ...]:
        """The evaluated classes."""
        return tuple(range(self.num_classes))

    def reads(self, label: str) -> bool:
        """Whether `read_raw` must read `label` for the requested tasks."""
        if label in ("normals", "edges"):
            return label in self.tasks and label in self.provided_tasks
        derives_from = {"depth": "normals", "semseg": "edges"}[label]
        return label in self.tasks or (
            derives_from in self.tasks and derives_from not in self.provided_tasks)

    def roles(self) -> tuple[str, ...]:
        """The file roles the requested tasks need (the image always)."""
        return ("image",) + tuple(label for label in TASK_ORDER if self.reads(label))

    def _check_archives(self) -> None:
        if not self.root.is_dir():
            raise DatasetError(f"dataset root {self.root} is not a folder; pass the folder "
                               f"where you extracted the {type(self).__name__} archives")
        archives = self.archives()
        missing = []
        for role in self.roles():
            spec = archives[role]
            pattern = spec.folder.format(**self.layout())
            if not any(path.is_dir() for path in self.root.glob(pattern)):
                missing.append(f"{self.root / pattern} not found: {spec.hint()}")
        if missing:
            raise DatasetError("; ".join(missing))

    def _check_files(self) -> None:
        archives = self.archives()
        for sample in self.samples:
            for role, path in sample.paths.items():
                if role in archives:
                    require_file(path, f"sample {sample.name!r} of split {self.split!r} needs it; "
                                       f"{archives[role].hint()}")

    def __len__(self) -> int:
        return len(self.samples)

    def read_resized(self, index: int) -> tuple[dict[str, object], dict[str, int]]:
        """(the maps read from files as tensors at the working size, before any derivation;
        the reader's counts, e.g. ignored unknown-colour pixels)."""
        sample = self.samples[index]
        raw = self.read_raw(sample)
        contract = raw_to_tensors(raw)
        contract["name"] = sample.name
        contract["domain"] = self.domain
        if self.size is not None:
            contract = Resize(self.size)(contract)
        return contract, raw.counts

    def __getitem__(self, index: int) -> dict[str, object]:
        sample = complete_sample(self.read_resized(index)[0], self.tasks)
        return sample if self.transform is None else self.transform(sample)


def _parse_optional_tasks(tasks: str | Iterable[str]) -> tuple[str, ...]:
    """parse_tasks, but an empty selection (images only, e.g. an unlabelled UDA target) is allowed."""
    if not isinstance(tasks, str):
        tasks = list(tasks)
        if not tasks:
            return ()
    return parse_tasks(tasks)


def raw_to_tensors(raw: RawSample) -> dict[str, object]:
    """A RawSample -> data-contract tensors at its native size (maps it lacks stay absent)."""
    sample: dict[str, object] = {
        "image": torch.from_numpy(np.ascontiguousarray(raw.image)).permute(2, 0, 1).float() / 255.0,
        "K": torch.as_tensor(raw.K, dtype=torch.float32),
    }
    if raw.semseg is not None:
        sample["semseg"] = torch.from_numpy(raw.semseg.astype(np.int64))  # H, W
    if raw.depth is not None:
        sample["depth"] = torch.from_numpy(raw.depth.astype(np.float32))[None]  # 1, H, W
    if raw.normals is not None:
        sample["normals"] = torch.from_numpy(raw.normals.astype(np.float32)).permute(2, 0, 1)
    if raw.edges is not None:
        sample["edges"] = torch.from_numpy((raw.edges > 0).astype(np.float32))[None]  # 1, H, W
    if raw.frames is not None:
        ids = sorted(raw.frames)
        frames = np.stack([raw.frames[frame] for frame in ids])  # S, H, W, 3
        sample["frames"] = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0  # S, 3, H, W
        sample["frame_ids"] = torch.tensor(ids)
    return sample


def complete_sample(sample: dict[str, object], tasks: Sequence[str]) -> dict[str, object]:
    """Derive the requested normals/edges the files lacked, then drop maps no task asked for."""
    if "normals" in tasks and "normals" not in sample:
        # Deviation: metric depth and K at the working size (the reference: inverse depth, full-size K).
        sample["normals"] = normals_from_depth(sample["depth"], sample["K"])[0]
    if "edges" in tasks and "edges" not in sample:
        sample["edges"] = edges_from_labels(sample["semseg"])
    for label in TASK_ORDER:
        if label not in tasks:
            sample.pop(label, None)
    return sample


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """A 3 x 3 pinhole intrinsics matrix."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float32)


def intrinsics_at(K: np.ndarray, calibration_size: tuple[int, int],
                  image_size: tuple[int, int]) -> np.ndarray:
    """K given at `calibration_size` (H, W) rescaled to an image of `image_size`."""
    scaled = scale_intrinsics(torch.as_tensor(K), calibration_size, image_size)
    return scaled.numpy()
