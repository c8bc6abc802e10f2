"""Cityscapes: images, fine labels and stereo depth (docs/real_datasets.md; the official `dataset/cityscapes.py`).

Layout under `root` (stem = `<city>_<seq>_<frame>`), from the official `*_trainvaltest.zip` archives:
    leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png      (or leftImg8bit_small/, downscaled)
    gtFine/<split>/<city>/<stem>_gtFine_labelIds.png       label ids 0..33
    disparity/<split>/<city>/<stem>_disparity.png          uint16; p = 0 invalid
    camera/<split>/<city>/<stem>_camera.json               baseline and intrinsics
    leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png   (with sequence=True) the
                                                           30-frame snippets; frames -1 and +1 of each
                                                           labelled frame (frame number 19) are read
Depth z = baseline * fx / ((p - 1) / 256), with p <= 1 invalid (p = 1 is zero disparity, infinitely
far). It is computed at the disparity's own (full) resolution with the full-resolution fx from
the json, and then resized nearest, so the values stay exact whatever the working size (the
CTRL-UDA recipe the reference follows). K is the json's intrinsics, given at the disparity's
size and scaled to the working size; when depth is not read, the reference's constant K is used.
With `leftImg8bit_small`, the full-size label maps are nearest-resized to the image's size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from densemtl_lab.data import real_common
from densemtl_lab.data.classes import CITYSCAPES_LABEL_MAPS, CITYSCAPES_SET_NAMES, palette_for
from densemtl_lab.data.geometry import resize_nearest
from densemtl_lab.data.real_common import Archive, DatasetError, RawSample, RealDataset, SampleFiles

CITYSCAPES_SOURCE = "https://www.cityscapes-dataset.com/downloads/ (free registration)"
IMAGE_DIRS = ("leftImg8bit", "leftImg8bit_small")
#: Size (H, W) of the official images and of every label map.
FULL_SIZE = (1024, 2048)
#: The constant K the reference uses at 2048 x 1024 (its `get_K`).
REFERENCE_K = real_common.intrinsics(2262.52, 2265.30, 1096.98, 513.137)
#: Suffix of each role's file name, replacing "_leftImg8bit.png".
SUFFIXES = {"semseg": "_gtFine_labelIds.png", "depth": "_disparity.png", "camera": "_camera.json"}
FOLDERS = {"semseg": "gtFine", "depth": "disparity", "camera": "camera"}
#: The neighbours a sequence sample holds (the reference's frame_ids [0, -1, 1]) and their folder.
NEIGHBOURS = (-1, 1)
SEQUENCE_DIR = "leftImg8bit_sequence"


class Cityscapes(RealDataset):
    """Cityscapes with the 19, 16 (reference default), 13 or 8 class set; train 2975 / val 500.

    `sequence=True` adds the frames before and after each image (`frames` [2, 3, H, W], `frame_ids`) from
    `leftImg8bit_sequence/` (self-supervised depth; full-size images only)."""

    domain = "cityscapes"
    splits = ("train", "val", "test")

    def __init__(self, root: str | Path, split: str = "train", size: tuple[int, int] | None = (512, 1024),
                 num_classes: int = 16, image_dir: str = "leftImg8bit", tasks: str | Iterable[str] | None = None,
                 transform: Callable[[dict], dict] | None = None, sequence: bool = False) -> None:
        self._check_option("num_classes", num_classes, sorted(CITYSCAPES_LABEL_MAPS))
        self._check_option("image_dir", image_dir, IMAGE_DIRS)
        if sequence and image_dir != "leftImg8bit":
            raise DatasetError(f"sequence=True reads the full-size {SEQUENCE_DIR}/ frames; use image_dir='leftImg8bit', "
                               f"not {image_dir!r}")
        self.sequence = sequence
        self.num_classes = num_classes
        self.class_names = CITYSCAPES_SET_NAMES[num_classes]
        self.palette = palette_for(self.class_names)
        self.label_map = CITYSCAPES_LABEL_MAPS[num_classes]
        self.image_dir = image_dir
        super().__init__(root, split, size, tasks, transform)

    def archives(self) -> dict[str, Archive]:
        if self.image_dir == "leftImg8bit":
            image_archive = "leftImg8bit_trainvaltest.zip"
        else:
            image_archive = "a downscaled copy of leftImg8bit_trainvaltest.zip"
        return {
            "image": Archive("{image_dir}/{split}", image_archive, CITYSCAPES_SOURCE),
            "semseg": Archive("gtFine/{split}", "gtFine_trainvaltest.zip", CITYSCAPES_SOURCE),
            "depth": Archive("disparity/{split}", "disparity_trainvaltest.zip", CITYSCAPES_SOURCE),
            "camera": Archive("camera/{split}", "camera_trainvaltest.zip", CITYSCAPES_SOURCE),
            **{f"frame{frame:+d}": Archive(SEQUENCE_DIR + "/{split}", "leftImg8bit_sequence_trainvaltest.zip",
                                           CITYSCAPES_SOURCE) for frame in NEIGHBOURS},
        }

    def layout(self) -> dict[str, str]:
        return {"split": self.split, "image_dir": self.image_dir}

    def roles(self) -> tuple[str, ...]:
        roles = super().roles()
        roles = roles + ("camera",) if "depth" in roles else roles
        return roles + tuple(f"frame{frame:+d}" for frame in NEIGHBOURS) if self.sequence else roles

    def list_samples(self) -> list[SampleFiles]:
        image_root = self.root / self.image_dir / self.split
        samples = []
        for image in sorted(image_root.glob("*/*_leftImg8bit.png")):
            city = image.parent.name
            stem = image.name[: -len("_leftImg8bit.png")]
            paths = {"image": image}
            for role in self.roles()[1:]:
                if role.startswith("frame"):
                    paths[role] = self.root / SEQUENCE_DIR / self.split / city / neighbour_name(stem, int(role[5:]))
                else:
                    paths[role] = self.root / FOLDERS[role] / self.split / city / (stem + SUFFIXES[role])
            samples.append(SampleFiles(f"{city}/{stem}", paths))
        return samples

    def read_raw(self, sample: SampleFiles) -> RawSample:
        image = real_common.read_rgb(sample.paths["image"])
        image_size = image.shape[:2]
        raw = RawSample(image=image, K=real_common.intrinsics_at(REFERENCE_K, FULL_SIZE, image_size))
        if self.reads("semseg"):
            label_ids = real_common.png_channel(real_common.read_png(sample.paths["semseg"]))
            label_ids = self._fit_to_image(label_ids, image_size, sample.paths["semseg"])
            raw.semseg = real_common.lookup_ids(label_ids, self.label_map)
        if self.reads("depth"):
            disparity = real_common.png_channel(real_common.read_png(sample.paths["depth"]))
            baseline, K = read_camera(sample.paths["camera"])
            depth = disparity_to_depth(disparity, baseline, float(K[0, 0]))
            raw.depth = self._fit_to_image(depth, image_size, sample.paths["depth"])
            raw.K = real_common.intrinsics_at(K, disparity.shape[:2], image_size)
        if self.sequence:
            raw.frames = {}
            for frame in NEIGHBOURS:
                path = sample.paths[f"frame{frame:+d}"]
                raw.frames[frame] = real_common.read_rgb(path)
                real_common.check_same_size(image_size, raw.frames[frame], path)
        return raw

    def _fit_to_image(self, array: np.ndarray, image_size: tuple[int, int], path: Path) -> np.ndarray:
        """A full-size map nearest-resized to a `leftImg8bit_small` image (an exact size otherwise)."""
        height, width = array.shape[:2]
        downscaled = (self.image_dir == "leftImg8bit_small" and height % image_size[0] == 0
                      and width % image_size[1] == 0
                      and height // image_size[0] == width // image_size[1])
        if not downscaled:
            real_common.check_same_size(image_size, array, path)
            return array
        return resize_nearest(torch.from_numpy(array), image_size).numpy()


def neighbour_name(stem: str, offset: int) -> str:
    """The file name of the frame `offset` frames from `<city>_<seq>_<frame>` in leftImg8bit_sequence/."""
    city_and_sequence, _, frame = stem.rpartition("_")
    return f"{city_and_sequence}_{int(frame) + offset:06d}_leftImg8bit.png"


def read_camera(path: Path) -> tuple[float, np.ndarray]:
    """(stereo baseline in metres, K) from a Cityscapes `_camera.json`."""
    try:
        calibration = json.loads(path.read_text())
        baseline = float(calibration["extrinsic"]["baseline"])
        intrinsic = calibration["intrinsic"]
        K = real_common.intrinsics(intrinsic["fx"], intrinsic["fy"], intrinsic["u0"], intrinsic["v0"])
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"{path} lacks extrinsic.baseline or intrinsic.fx/fy/u0/v0 ({error!r}); "
                           "re-extract camera_trainvaltest.zip") from error
    return baseline, K


def disparity_to_depth(disparity: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """Metric depth from Cityscapes disparity PNG values p: z = B fx / ((p - 1) / 256), 0 if p <= 1."""
    p = disparity.astype(np.float64)
    valid = p > 1
    depth = np.zeros_like(p)
    depth[valid] = baseline * fx * 256.0 / (p[valid] - 1.0)
    return depth.astype(np.float32)
