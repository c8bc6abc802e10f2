"""Virtual KITTI 2 (v2.0.3): colour-coded classes and z-depth in centimetres (docs/real_datasets.md).

Layout under `root` (1242 x 375 frames), from the rgb, classSegmentation, depth and textgt archives:
    Scene<NN>/<variation>/frames/rgb/<camera>/rgb_<frame:05d>.jpg
    Scene<NN>/<variation>/frames/classSegmentation/<camera>/classgt_<frame:05d>.png   RGB colours
    Scene<NN>/<variation>/frames/depth/<camera>/depth_<frame:05d>.png                 uint16 cm
    Scene<NN>/<variation>/intrinsic.txt        optional: per-frame K (else the constant below)
The reference uses variation `15-deg-left`, `Camera_0`, all scenes, sorted then split 80/20 with a
seed; 14 classes (fully supervised) or 8 (VKITTI2 <-> Cityscapes). Depth 65535 (the far plane,
i.e. sky) and 0 are invalid. A class colour outside the table raises a DatasetError naming the file
and colour (a lossy or foreign file, not a VKITTI2 label); `unknown_colours="ignore"` maps it to
the ignore index instead, as the reference does, and counts the pixels (prepare records them).
"Undefined" black (0, 0, 0) is always ignored.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from densemtl_lab.data import real_common
from densemtl_lab.data.classes import CITYSCAPES_SET_NAMES, palette_for
from densemtl_lab.data.real_common import Archive, DatasetError, RawSample, RealDataset, SampleFiles
from densemtl_lab.tasks import IGNORE_INDEX

VKITTI2_SOURCE = "https://europe.naverlabs.com/research/computer-vision/proxy-virtual-worlds-vkitti-2/"
#: Size (H, W) of the frames, and their constant K, used when intrinsic.txt is absent.
FULL_SIZE = (375, 1242)
DEFAULT_K = real_common.intrinsics(725.0087, 725.0087, 620.5, 187.0)
FAR_PLANE_CM = 65535
UNKNOWN_COLOURS = ("error", "ignore")

#: The 14 classes (ids 0..13) and their colours (RGB) in the classgt images.
VKITTI2_CLASSES: tuple[str, ...] = (
    "terrain", "sky", "tree", "vegetation", "building", "road", "guardrail", "traffic sign",
    "traffic light", "pole", "misc", "truck", "car", "van",
)
VKITTI2_COLOURS: tuple[tuple[int, int, int], ...] = (
    (210, 0, 200), (90, 200, 255), (0, 199, 0), (90, 240, 0), (140, 140, 140), (100, 60, 100),
    (250, 100, 255), (255, 255, 0), (200, 200, 0), (255, 130, 0), (80, 80, 80), (160, 60, 60),
    (255, 127, 80), (0, 139, 139),
)
UNDEFINED_COLOUR = (0, 0, 0)
#: The 8-class VKITTI2 <-> Cityscapes set: 14-class id -> 8-class id (terrain, guardrail, misc ignored).
VKITTI2_TO_8: dict[int, int] = {5: 0, 4: 1, 9: 2, 8: 3, 7: 4, 2: 5, 3: 5, 1: 6, 11: 7, 12: 7, 13: 7}
CLASS_SETS = (14, 8)


def _colour_codes(rgb: np.ndarray) -> np.ndarray:
    """One int per pixel: R << 16 | G << 8 | B."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _class_table(num_classes: int) -> dict[int, int]:
    """Colour code -> train id for a class set (Undefined black -> ignore)."""
    table = {int(_colour_codes(np.array(UNDEFINED_COLOUR))): IGNORE_INDEX}
    for class_id, colour in enumerate(VKITTI2_COLOURS):
        train_id = class_id if num_classes == 14 else VKITTI2_TO_8.get(class_id, IGNORE_INDEX)
        table[int(_colour_codes(np.array(colour)))] = train_id
    return table


def decode_classes(rgb: np.ndarray, table: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """RGB class image -> (train ids with unknown colours ignored, mask of unknown-colour pixels)."""
    codes = _colour_codes(rgb)
    known = np.array(sorted(table), dtype=np.int64)
    values = np.array([table[code] for code in known], dtype=np.int64)
    position = np.searchsorted(known, codes).clip(max=len(known) - 1)
    unknown = known[position] != codes
    return np.where(unknown, IGNORE_INDEX, values[position]), unknown


@lru_cache(maxsize=64)
def read_intrinsics_file(path: Path) -> dict[tuple[int, int], np.ndarray]:
    """(frame, camera id) -> K from a VKITTI2 `intrinsic.txt` (header, then frame cam fx fy cx cy)."""
    table = {}
    try:
        for line in path.read_text().splitlines()[1:]:
            if line.strip():
                frame, camera, fx, fy, cx, cy = line.split()
                table[int(frame), int(camera)] = real_common.intrinsics(float(fx), float(fy), float(cx), float(cy))
    except ValueError as error:
        raise DatasetError(f"{path} is not a VKITTI2 intrinsic.txt (frame cameraID fx fy cx cy "
                           f"per line): {error}; re-extract vkitti_2.0.3_textgt.tar.gz") from error
    return table


class VirtualKitti2(RealDataset):
    """Virtual KITTI 2 for one variation and camera, with the 14 or 8 class set."""

    domain = "vkitti2"

    def __init__(self, root: str | Path, split: str = "train", size: tuple[int, int] | None = (320, 1024),
                 num_classes: int = 14, variation: str = "15-deg-left", camera: str = "Camera_0",
                 scenes: Iterable[str] | None = None, split_seed: int = 42, unknown_colours: str = "error",
                 tasks: str | Iterable[str] | None = None, transform: Callable[[dict], dict] | None = None) -> None:
        self._check_option("num_classes", num_classes, CLASS_SETS)
        self._check_option("unknown_colours", unknown_colours, UNKNOWN_COLOURS)
        self.num_classes = num_classes
        if num_classes == 14:
            self.class_names, self.palette = VKITTI2_CLASSES, VKITTI2_COLOURS
        else:
            self.class_names = CITYSCAPES_SET_NAMES[8]
            self.palette = palette_for(self.class_names)
        self.variation, self.camera = variation, camera
        self.scenes = None if scenes is None else tuple(sorted(scenes))
        self.split_seed = split_seed
        self.unknown_colours = unknown_colours
        self._class_table = _class_table(num_classes)
        super().__init__(root, split, size, tasks, transform)

    def archives(self) -> dict[str, Archive]:
        frames = "Scene*/{variation}/frames/{kind}/{camera}"
        return {
            "image": Archive(frames.replace("{kind}", "rgb"), "vkitti_2.0.3_rgb.tar", VKITTI2_SOURCE),
            "semseg": Archive(frames.replace("{kind}", "classSegmentation"),
                              "vkitti_2.0.3_classSegmentation.tar", VKITTI2_SOURCE),
            "depth": Archive(frames.replace("{kind}", "depth"), "vkitti_2.0.3_depth.tar", VKITTI2_SOURCE),
        }

    def layout(self) -> dict[str, str]:
        return {"split": self.split, "variation": self.variation, "camera": self.camera}

    def list_samples(self) -> list[SampleFiles]:
        scene_dirs = sorted(path for path in self.root.glob("Scene*") if path.is_dir())
        if self.scenes is not None:
            missing = sorted(set(self.scenes) - {path.name for path in scene_dirs})
            if missing:
                raise DatasetError(f"scenes={list(self.scenes)} names {missing}, not found under "
                                   f"{self.root}; pick from {[path.name for path in scene_dirs]}")
            scene_dirs = [path for path in scene_dirs if path.name in self.scenes]
        frames = {}
        for scene in scene_dirs:
            for image in (scene / self.variation / "frames" / "rgb" / self.camera).glob("rgb_*.jpg"):
                frames[f"{scene.name}/{image.stem[len('rgb_'):]}"] = image
        samples = []
        for name in real_common.seeded_split(list(frames), self.split, self.split_seed):
            scene, frame = name.split("/")
            base = self.root / scene / self.variation
            paths = {"image": frames[name], "intrinsics": base / "intrinsic.txt"}
            if self.reads("semseg"):
                paths["semseg"] = base / "frames" / "classSegmentation" / self.camera / f"classgt_{frame}.png"
            if self.reads("depth"):
                paths["depth"] = base / "frames" / "depth" / self.camera / f"depth_{frame}.png"
            samples.append(SampleFiles(name, paths))
        return samples

    def read_raw(self, sample: SampleFiles) -> RawSample:
        image = real_common.read_rgb(sample.paths["image"])
        raw = RawSample(image=image, K=self._intrinsics(sample, image.shape[:2]))
        if self.reads("semseg"):
            path = sample.paths["semseg"]
            colours = real_common.read_png(path)[..., 2::-1]  # BGR -> RGB
            real_common.check_same_size(image.shape[:2], colours, path)
            raw.semseg, unknown = decode_classes(colours, self._class_table)
            if unknown.any() and self.unknown_colours == "error":
                colour = tuple(int(c) for c in colours[unknown][0])
                raise DatasetError(f"{path} has {int(unknown.sum())} pixels of colours outside the "
                                   f"VKITTI2 class table, e.g. RGB {colour}; re-extract the file, "
                                   "or pass unknown_colours='ignore' to ignore them")
            raw.counts["unknown_colour_pixels"] = int(unknown.sum())
        if self.reads("depth"):
            centimetres = real_common.png_channel(real_common.read_png(sample.paths["depth"]))
            real_common.check_same_size(image.shape[:2], centimetres, sample.paths["depth"])
            valid = (centimetres > 0) & (centimetres < FAR_PLANE_CM)
            raw.depth = np.where(valid, centimetres.astype(np.float32) * 0.01, 0.0).astype(np.float32)
        return raw

    def _intrinsics(self, sample: SampleFiles, image_size: tuple[int, int]) -> np.ndarray:
        """The frame's K from intrinsic.txt when present, else the constant (at 1242 x 375)."""
        path = sample.paths["intrinsics"]
        if not path.is_file():
            return real_common.intrinsics_at(DEFAULT_K, FULL_SIZE, image_size)
        frame = int(sample.name.split("/")[1])
        camera = int(self.camera.rsplit("_", 1)[-1])
        table = read_intrinsics_file(path)
        if (frame, camera) not in table:
            raise DatasetError(f"{path} has no line for frame {frame}, camera {camera}; "
                               "re-extract vkitti_2.0.3_textgt.tar.gz")
        return table[frame, camera]
