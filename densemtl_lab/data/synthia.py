"""SYNTHIA-RAND-CITYSCAPES: 9,400 synthetic frames, 16 classes and depth (docs/real_datasets.md).

Layout under `root` (7-digit names, 1280 x 760):
    RGB/0000000.png
    GT/LABELS/0000000.png      16-bit, 3 channels: R = class id 0..22, G = instance id
      or parsed_LABELS/        8-bit raw class ids (the CTRL-UDA copy)
    Depth/Depth/0000000.png    16-bit depth in centimetres (3 equal channels in some copies)
      or Depth/
Labels are read with cv2 keeping 16 bits (Pillow keeps only the high byte of 16-bit RGB, so class
3 would read as 0); cv2 orders channels BGR, so R is index 2. The split is the reference's random
80/20, made reproducible: sorted names, then a seeded shuffle (the reference shuffles an unsorted
directory walk). K is the reference's constant, scaled per axis to the working size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from densemtl_lab.data import real_common
from densemtl_lab.data.classes import CITYSCAPES_SET_NAMES, palette_for
from densemtl_lab.data.real_common import Archive, RawSample, RealDataset, SampleFiles

SYNTHIA_SOURCE = "https://synthia-dataset.net/downloads/ (SYNTHIA-RAND-CITYSCAPES (CVPR16))"
SYNTHIA_ARCHIVE = "SYNTHIA_RAND_CITYSCAPES.rar"
LABEL_DIRS = ("GT/LABELS", "parsed_LABELS")
DEPTH_DIRS = ("Depth/Depth", "Depth")
#: Size (H, W) of the SYNTHIA frames and the reference's constant K at that size.
FULL_SIZE = (760, 1280)
REFERENCE_K = real_common.intrinsics(532.740352, 532.740352, 640.0, 380.0)

#: SYNTHIA class ids 0..22 (0 = void).
SYNTHIA_CLASSES: tuple[str, ...] = (
    "void", "sky", "building", "road", "sidewalk", "fence", "vegetation", "pole", "car",
    "traffic sign", "pedestrian", "bicycle", "motorcycle", "parking-slot", "road-work",
    "traffic light", "terrain", "rider", "truck", "bus", "train", "wall", "lanemarking",
)
#: SYNTHIA id -> the 16-class train id (Cityscapes' 16-class order); the rest are ignored.
SYNTHIA_TO_16: dict[int, int] = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9,
                                 10: 10, 17: 11, 8: 12, 19: 13, 12: 14, 11: 15}


def _first_existing(root: Path, candidates: tuple[str, ...]) -> str:
    """The first of `candidates` that is a folder under root (the first one if none is)."""
    for candidate in candidates:
        if (root / candidate).is_dir():
            return candidate
    return candidates[0]


class Synthia(RealDataset):
    """SYNTHIA-RAND-CITYSCAPES with the 16 classes shared with Cityscapes."""

    domain = "synthia"
    num_classes = 16
    class_names = CITYSCAPES_SET_NAMES[16]
    palette = palette_for(CITYSCAPES_SET_NAMES[16])

    def __init__(self, root: str | Path, split: str = "train", size: tuple[int, int] | None = (512, 1024),
                 labels_dir: str | None = None, depth_dir: str | None = None, split_seed: int = 42,
                 tasks: str | Iterable[str] | None = None, transform: Callable[[dict], dict] | None = None) -> None:
        self._check_option("labels_dir", labels_dir, (*LABEL_DIRS, None))  # None: the one present
        self._check_option("depth_dir", depth_dir, (*DEPTH_DIRS, None))
        root = Path(root)
        self.labels_dir = labels_dir or _first_existing(root, LABEL_DIRS)
        self.depth_dir = depth_dir or _first_existing(root, DEPTH_DIRS)
        self.split_seed = split_seed
        super().__init__(root, split, size, tasks, transform)

    def archives(self) -> dict[str, Archive]:
        return {
            "image": Archive("RGB", SYNTHIA_ARCHIVE, SYNTHIA_SOURCE),
            "semseg": Archive(self.labels_dir, SYNTHIA_ARCHIVE, SYNTHIA_SOURCE),
            "depth": Archive(self.depth_dir, SYNTHIA_ARCHIVE, SYNTHIA_SOURCE),
        }

    def list_samples(self) -> list[SampleFiles]:
        names = [path.stem for path in (self.root / "RGB").glob("*.png")]
        folders = {"semseg": self.labels_dir, "depth": self.depth_dir}
        samples = []
        for name in real_common.seeded_split(names, self.split, self.split_seed):
            paths = {"image": self.root / "RGB" / f"{name}.png"}
            for role in self.roles()[1:]:
                paths[role] = self.root / folders[role] / f"{name}.png"
            samples.append(SampleFiles(name, paths))
        return samples

    def read_raw(self, sample: SampleFiles) -> RawSample:
        image = real_common.read_rgb(sample.paths["image"])
        raw = RawSample(image=image, K=real_common.intrinsics_at(REFERENCE_K, FULL_SIZE, image.shape[:2]))
        if self.reads("semseg"):
            labels = real_common.png_channel(real_common.read_png(sample.paths["semseg"]))  # R = class id
            real_common.check_same_size(image.shape[:2], labels, sample.paths["semseg"])
            raw.semseg = real_common.lookup_ids(labels, SYNTHIA_TO_16)
        if self.reads("depth"):
            centimetres = real_common.png_channel(real_common.read_png(sample.paths["depth"]))
            real_common.check_same_size(image.shape[:2], centimetres, sample.paths["depth"])
            raw.depth = centimetres.astype(np.float32) * 0.01
        return raw
