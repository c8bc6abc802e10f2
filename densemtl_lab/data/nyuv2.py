"""NYUv2, the multi-task release NYUD_MT (795 train / 654 val, 425 x 560) (docs/real_datasets.md).

Layout under `root` (the ATRC / MTI-Net tarball; DenseMTL's code expects .png where it has .npy):
    gt_sets/{train,val}.txt      one sample id per line
    images/<id>.jpg | .png
    segmentation/<id>.png        uint8: 0 = void (ignored), 1..40 -> classes 0..39
    depth/<id>.npy               float32 metres (0 or NaN: invalid)
    normals/<id>.npy | .png      H x W x 3 in [-1, 1] (png: 2 * rgb / 255 - 1)
    edge/<id>.npy | .png         boundary map, > 0 is an edge
Normals and edges are the provided labels (nothing is derived). They are used in the release's
own frame, as the reference does (its axis convention is unverified against our camera frame).
Edges are resized nearest (the reference resizes bilinearly then thresholds > 0, thickening them).
K is the Kinect RGB intrinsics shifted by an assumed crop offset (rows 45, cols 40; unverified);
it only matters for point clouds, since the normals come from files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from densemtl_lab.data import real_common
from densemtl_lab.data.classes import palette_for
from densemtl_lab.data.real_common import Archive, DatasetError, RawSample, RealDataset, SampleFiles

NYUD_SOURCE = ("NYUD_MT.tgz, the multi-task NYUD-v2 release linked from "
               "github.com/SimonVandenhende/Multi-Task-Learning-PyTorch and github.com/brdav/atrc")
#: Size (H, W) of the release's frames and the Kinect K shifted by the assumed crop.
FULL_SIZE = (425, 560)
KINECT_K = real_common.intrinsics(518.858, 519.470, 325.582 - 40.0, 253.736 - 45.0)

#: The 40 classes of Gupta et al. (segmentation value - 1).
NYU40_CLASSES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)
NYU40_MAP: dict[int, int] = {value: value - 1 for value in range(1, 41)}

#: Role -> (folder, accepted extensions in order of preference).
FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "image": ("images", (".jpg", ".png")),
    "semseg": ("segmentation", (".png",)),
    "depth": ("depth", (".npy",)),
    "normals": ("normals", (".npy", ".png")),
    "edges": ("edge", (".npy", ".png")),
}


def _read_map(path: Path) -> np.ndarray:
    """A label map from .npy or .png (8/16-bit, channels as stored, BGR reordered to RGB)."""
    if path.suffix == ".npy":
        return real_common.read_npy(path)
    array = real_common.read_png(path)
    return array[..., 2::-1] if array.ndim == 3 else array


def _single_channel(array: np.ndarray) -> np.ndarray:
    """A map stored as H x W, 1 x H x W, H x W x 1 or H x W x C (first channel) -> H x W."""
    array = np.squeeze(array)
    return array[..., 0] if array.ndim == 3 else array


def _normals(path: Path) -> np.ndarray:
    """Unit normals H, W, 3 (0 where the stored vector is shorter than 0.5) from .npy in [-1, 1] or 8-bit .png."""
    stored = _read_map(path).astype(np.float32)
    if stored.ndim == 3 and stored.shape[0] == 3 and stored.shape[-1] != 3:
        stored = stored.transpose(1, 2, 0)  # 3, H, W -> H, W, 3
    if path.suffix == ".png":
        stored = 2.0 * stored / 255.0 - 1.0
    stored = np.nan_to_num(stored)
    norm = np.linalg.norm(stored, axis=-1, keepdims=True)
    return np.where(norm > 0.5, stored / np.maximum(norm, 0.5), 0.0).astype(np.float32)


class NYUv2(RealDataset):
    """NYUD_MT with 40 classes, depth, provided normals and edges (all four tasks from files)."""

    domain = "nyuv2"
    provided_tasks = ("semseg", "depth", "normals", "edges")
    splits = ("train", "val")
    num_classes = 40
    class_names = NYU40_CLASSES
    palette = palette_for(NYU40_CLASSES)

    def __init__(self, root: str | Path, split: str = "train", size: tuple[int, int] | None = (448, 576),
                 tasks: str | Iterable[str] | None = None, transform: Callable[[dict], dict] | None = None) -> None:
        super().__init__(root, split, size, tasks, transform)

    def archives(self) -> dict[str, Archive]:
        archives = {role: Archive(folder, "NYUD_MT.tgz", NYUD_SOURCE)
                    for role, (folder, _) in FILES.items()}
        archives["split_list"] = Archive("gt_sets", "NYUD_MT.tgz", NYUD_SOURCE)
        return archives

    def roles(self) -> tuple[str, ...]:
        return ("split_list",) + super().roles()

    def list_samples(self) -> list[SampleFiles]:
        list_path = self.root / "gt_sets" / f"{self.split}.txt"
        if not list_path.is_file():
            raise DatasetError(f"{list_path} is missing; extract NYUD_MT.tgz ({NYUD_SOURCE})")
        names = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
        return [SampleFiles(name, {role: self._find(role, name) for role in self.roles()[1:]})
                for name in names]

    def _find(self, role: str, name: str) -> Path:
        """The file of `role` for sample `name`, whichever accepted extension it has."""
        folder, extensions = FILES[role]
        candidates = [self.root / folder / f"{name}{extension}" for extension in extensions]
        return next((path for path in candidates if path.is_file()), candidates[0])

    def read_raw(self, sample: SampleFiles) -> RawSample:
        image = real_common.read_rgb(sample.paths["image"])
        raw = RawSample(image=image, K=real_common.intrinsics_at(KINECT_K, FULL_SIZE, image.shape[:2]))
        readers = {
            "semseg": lambda path: real_common.lookup_ids(
                real_common.png_channel(real_common.read_png(path)), NYU40_MAP),
            "depth": lambda path: np.nan_to_num(_single_channel(real_common.read_npy(path)).astype(np.float32)),
            "normals": _normals,
            "edges": lambda path: _single_channel(_read_map(path)) > 0,
        }
        for role in readers:
            if self.reads(role):
                value = readers[role](sample.paths[role])
                real_common.check_same_size(image.shape[:2], value, sample.paths[role])
                setattr(raw, role, value)
        return raw
