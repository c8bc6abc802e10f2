"""Tiny fixtures of the real datasets, written in each exact official format (docs/real_datasets.md).

The tests and notebook 01 use them to show how real data plugs in without downloading anything.
Each writer renders a few small toy street scenes (`toy_scene`, `toy_render`: the same scenes as
`ToyScenes`, source domain) and stores them the way the dataset ships them: Cityscapes 16-bit
disparity with a camera json, SYNTHIA 16-bit 3-channel labels and centimetre depth, VKITTI2
colour-coded classes, jpg and centimetre depth, NYUD_MT npy/png maps with split lists. Scenes
carry Cityscapes train ids, mapped to each dataset's raw ids by class name.

Each scene is rendered through the dataset's own K (the toy camera's intrinsics are replaced,
its height and pitch kept), so a loader's depth-derived normals must match the analytic ones.
Depth beyond 80 m (the evaluation range) is written as invalid, since the far ground plane would
not fit the 16-bit formats.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from densemtl_lab.data import cityscapes, nyuv2, synthia, vkitti2
from densemtl_lab.data.classes import CITYSCAPES_CLASSES, CITYSCAPES_LABEL_MAPS
from densemtl_lab.data.geometry import edges_from_labels
from densemtl_lab.data.real_common import intrinsics_at
from densemtl_lab.data.toy import shade_source
from densemtl_lab.data.toy_render import render_scene
from densemtl_lab.data.toy_scene import SCENE_STYLES, sample_scene
from densemtl_lab.data.toy_sequence import move_camera
from densemtl_lab.tasks import MAX_DEPTH_M

STEREO_BASELINE_M = 0.22
FIXTURE_SEED = 7  # scenes are np.random.default_rng([FIXTURE_SEED, index])


@dataclass
class FixtureScene:
    """One rendered scene: what a loader should recover from the files written for it."""

    name: str  # the sample name the loader reports
    split: str  # the official split it was written to ("all" where the loader splits)
    image: np.ndarray  # H, W, 3 uint8
    labels: np.ndarray  # H, W int64 Cityscapes train ids
    instances: np.ndarray  # H, W int32 instance ids (0 = sky)
    primitives: np.ndarray  # H, W int32 primitive ids (a vehicle's body and cabin differ)
    depth: np.ndarray  # H, W float32 metres, 0 on sky and beyond 80 m
    normals: np.ndarray  # H, W, 3 float32 camera frame, 0 on sky
    K: np.ndarray  # 3, 3 float32


def _fixture_scene(size: tuple[int, int], K: np.ndarray, index: int) -> tuple[np.random.Generator, Any]:
    """(its generator, after the scene's draws; toy scene `index` seen through the intrinsics `K`)."""
    rng = np.random.default_rng([FIXTURE_SEED, index])
    scene = sample_scene(rng, size, SCENE_STYLES["source"])
    camera = replace(scene.camera, fx=float(K[0, 0]), fy=float(K[1, 1]), cx=float(K[0, 2]),
                     cy=float(K[1, 2]))
    return rng, replace(scene, camera=camera)


def render_fixture_neighbour(size: tuple[int, int], K: np.ndarray, index: int, offset: int) -> np.ndarray:
    """Fixture scene `index` seen `offset` frames later from a camera driving 1 m per frame: H, W, 3 uint8."""
    rng, scene = _fixture_scene(size, K, index)
    moved = move_camera(scene, (0.0, 0.0, float(offset)))
    image = np.clip(shade_source(moved, render_scene(moved), rng), 0.0, 1.0).transpose(1, 2, 0)
    return (image * 255.0 + 0.5).astype(np.uint8)


def render_fixture(size: tuple[int, int], K: np.ndarray, index: int, name: str, split: str) -> FixtureScene:
    """Toy street scene `index` rendered at `size` through the intrinsics `K`."""
    rng, scene = _fixture_scene(size, K, index)
    render = render_scene(scene)
    image = np.clip(shade_source(scene, render, rng), 0.0, 1.0).transpose(1, 2, 0)  # H, W, 3
    depth = np.where(render.depth <= MAX_DEPTH_M, render.depth, 0.0).astype(np.float32)
    return FixtureScene(
        name=name, split=split, image=(image * 255.0 + 0.5).astype(np.uint8),
        labels=render.labels.astype(np.int64), instances=render.instance,
        primitives=render.primitive, depth=depth,
        normals=render.normals().transpose(1, 2, 0).copy(), K=np.asarray(K, np.float32))


# --- file writers ---------------------------------------------------------------------------------

def _write_png(path: Path, array: np.ndarray) -> None:
    """An 8- or 16-bit PNG; 3-channel arrays are given in RGB order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = array[..., ::-1]  # RGB -> BGR for cv2
    if not cv2.imwrite(str(path), np.ascontiguousarray(array)):
        raise OSError(f"could not write {path}")


def _write_rgb(path: Path, image: np.ndarray) -> None:
    """An 8-bit RGB image, png or jpg (quality 95) by the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95)


def _raw_ids(labels: np.ndarray, by_name: dict[str, int], default: int) -> np.ndarray:
    """Cityscapes train ids -> a dataset's raw ids, matched by class name."""
    table = np.array([by_name.get(name, default) for name in CITYSCAPES_CLASSES], dtype=np.int64)
    return table[labels]


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def write_cityscapes(root: str | Path, size: tuple[int, int] = (64, 128),
                     counts: dict[str, int] | None = None, small_images: bool = False,
                     sequences: bool = False) -> list[FixtureScene]:
    """Cityscapes fixtures: images, gtFine label ids, uint16 disparity p = 256 B fx / z + 1, camera json.

    `small_images` also writes `leftImg8bit_small/` at half the size (the reference's folder);
    `sequences` writes `leftImg8bit_sequence/` frames 18, 19 and 20 of each snippet (the camera drives 1 m
    per frame; frame 19 is the labelled image).
    """
    root = Path(root)
    label_ids = {CITYSCAPES_CLASSES[train_id]: label_id
                 for label_id, train_id in CITYSCAPES_LABEL_MAPS[19].items()}
    K = intrinsics_at(cityscapes.REFERENCE_K, cityscapes.FULL_SIZE, size)
    scenes = []
    for split, count in (counts or {"train": 2, "val": 1}).items():
        city = "aachen" if split == "train" else "frankfurt"
        for index in range(count):
            stem = f"{city}_{index:06d}_000019"
            scene = render_fixture(size, K, len(scenes), f"{city}/{stem}", split)
            folder = Path(split) / city
            _write_rgb(root / "leftImg8bit" / folder / f"{stem}_leftImg8bit.png", scene.image)
            for offset in (-1, 0, 1) if sequences else ():
                frame = scene.image if offset == 0 else render_fixture_neighbour(size, K, len(scenes), offset)
                name = cityscapes.neighbour_name(stem, offset)
                _write_rgb(root / cityscapes.SEQUENCE_DIR / folder / name, frame)
            if small_images:
                half = (size[1] // 2, size[0] // 2)
                small = np.asarray(Image.fromarray(scene.image).resize(half, Image.LANCZOS))
                _write_rgb(root / "leftImg8bit_small" / folder / f"{stem}_leftImg8bit.png", small)
            ids = _raw_ids(scene.labels, label_ids, 0).astype(np.uint8)
            _write_png(root / "gtFine" / folder / f"{stem}_gtFine_labelIds.png", ids)
            valid = scene.depth > 0
            p = np.zeros(size, dtype=np.float64)
            p[valid] = np.round(256.0 * STEREO_BASELINE_M * K[0, 0] / scene.depth[valid]) + 1
            _write_png(root / "disparity" / folder / f"{stem}_disparity.png", p.astype(np.uint16))
            camera = {"extrinsic": {"baseline": STEREO_BASELINE_M, "pitch": 0.0, "roll": 0.0,
                                    "x": 1.7, "y": 0.0, "yaw": 0.0, "z": 1.2},
                      "intrinsic": {"fx": float(K[0, 0]), "fy": float(K[1, 1]),
                                    "u0": float(K[0, 2]), "v0": float(K[1, 2])}}
            path = root / "camera" / folder / f"{stem}_camera.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(camera, indent=2))
            scenes.append(scene)
    return scenes


def write_synthia(root: str | Path, size: tuple[int, int] = (64, 128), count: int = 3,
                  labels_dir: str = "GT/LABELS", depth_dir: str = "Depth/Depth",
                  depth_channels: int = 3) -> list[FixtureScene]:
    """SYNTHIA-RAND-CITYSCAPES fixtures: RGB png, labels (16-bit R = id, G = instance, or 8-bit
    `parsed_LABELS`), depth in cm (16-bit, 1 or 3 equal channels), rendered with SYNTHIA's K."""
    root = Path(root)
    by_name = {name: class_id for class_id, name in enumerate(synthia.SYNTHIA_CLASSES)}
    K = intrinsics_at(synthia.REFERENCE_K, synthia.FULL_SIZE, size)
    scenes = []
    for index in range(count):
        name = f"{index:07d}"
        scene = render_fixture(size, K, index, name, "all")
        _write_rgb(root / "RGB" / f"{name}.png", scene.image)
        ids = _raw_ids(scene.labels, by_name, 0)
        if labels_dir == "parsed_LABELS":
            _write_png(root / labels_dir / f"{name}.png", ids.astype(np.uint8))
        else:
            instance = scene.instances.astype(np.int64)
            _write_png(root / labels_dir / f"{name}.png",
                       np.stack([ids, instance, np.zeros_like(ids)], axis=-1).astype(np.uint16))
        centimetres = np.round(scene.depth * 100.0).astype(np.uint16)
        if depth_channels == 3:
            centimetres = np.repeat(centimetres[..., None], 3, axis=-1)
        _write_png(root / depth_dir / f"{name}.png", centimetres)
        scenes.append(scene)
    return scenes


def write_vkitti2(root: str | Path, size: tuple[int, int] = (48, 160),
                  frames: dict[str, int] | None = None, variation: str = "15-deg-left",
                  camera: str = "Camera_0", intrinsics_file: bool = True) -> list[FixtureScene]:
    """Virtual KITTI 2 fixtures: jpg frames, RGB class colours, uint16 cm depth (sky 65535), and
    `intrinsic.txt` holding the fixture's K (else the loader falls back to the constant K)."""
    root = Path(root)
    colour_by_name = dict(zip(vkitti2.VKITTI2_CLASSES, range(len(vkitti2.VKITTI2_CLASSES))))
    colour_by_name["sidewalk"] = vkitti2.VKITTI2_CLASSES.index("misc")
    colours = np.asarray(vkitti2.VKITTI2_COLOURS + (vkitti2.UNDEFINED_COLOUR,), dtype=np.uint8)
    K = intrinsics_at(vkitti2.DEFAULT_K, vkitti2.FULL_SIZE, size)
    scenes = []
    for scene_name, count in (frames or {"Scene01": 2, "Scene02": 1}).items():
        base = root / scene_name / variation
        for index in range(count):
            scene = render_fixture(size, K, len(scenes), f"{scene_name}/{index:05d}", "all")
            frame_dir = base / "frames"
            _write_rgb(frame_dir / "rgb" / camera / f"rgb_{index:05d}.jpg", scene.image)
            class_ids = _raw_ids(scene.labels, colour_by_name, len(vkitti2.VKITTI2_COLOURS))
            _write_png(frame_dir / "classSegmentation" / camera / f"classgt_{index:05d}.png",
                       colours[class_ids])
            centimetres = np.where(scene.depth > 0, np.round(scene.depth * 100.0),
                                   vkitti2.FAR_PLANE_CM)
            _write_png(frame_dir / "depth" / camera / f"depth_{index:05d}.png",
                       centimetres.astype(np.uint16))
            scenes.append(scene)
        if intrinsics_file:
            rows = [f"{frame} {cam} {K[0, 0]:.6f} {K[1, 1]:.6f} {K[0, 2]:.6f} {K[1, 2]:.6f}"
                    for frame in range(count) for cam in (0, 1)]
            _write_lines(base / "intrinsic.txt", ["frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"] + rows)
    return scenes


#: Cityscapes train-id name -> NYUv2 segmentation value (class + 1; 0 = void).
NYU_VALUES = {"road": 2, "sidewalk": 20, "building": 1, "pole": 38, "vegetation": 40,
              "terrain": 2, "car": 39}


def write_nyuv2(root: str | Path, size: tuple[int, int] = (48, 64),
                counts: dict[str, int] | None = None, variant: str = "npy") -> list[FixtureScene]:
    """NYUD_MT fixtures: gt_sets lists, images, segmentation (value = class + 1, sky -> 0 void),
    depth npy, and normals/edges as npy (the tarball, jpg images) or png (`variant="png"`)."""
    if variant not in ("npy", "png"):
        raise ValueError(f"variant={variant!r}; use 'npy' or 'png'")
    root = Path(root)
    K = intrinsics_at(nyuv2.KINECT_K, nyuv2.FULL_SIZE, size)
    scenes = []
    for split, count in (counts or {"train": 2, "val": 1}).items():
        names = []
        for index in range(count):
            name = f"{split}_{index:04d}"
            scene = render_fixture(size, K, len(scenes), name, split)
            values = _raw_ids(scene.labels, NYU_VALUES, 0)
            edges = edges_from_labels(torch.from_numpy(values - 1), ignore_index=-1)[0].numpy()
            _write_rgb(root / "images" / f"{name}.{'jpg' if variant == 'npy' else 'png'}", scene.image)
            _write_png(root / "segmentation" / f"{name}.png", values.astype(np.uint8))
            _save_npy(root / "depth" / f"{name}.npy", scene.depth)
            if variant == "npy":
                _save_npy(root / "normals" / f"{name}.npy", scene.normals)
                _save_npy(root / "edge" / f"{name}.npy", edges.astype(np.float32))
            else:
                encoded = np.round((scene.normals + 1.0) * 127.5).astype(np.uint8)
                _write_png(root / "normals" / f"{name}.png", encoded)
                _write_png(root / "edge" / f"{name}.png", (edges * 255).astype(np.uint8))
            names.append(name)
            scenes.append(scene)
        _write_lines(root / "gt_sets" / f"{split}.txt", names)
    return scenes


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)


#: Dataset name -> fixture writer.
WRITERS = {"cityscapes": write_cityscapes, "synthia": write_synthia, "vkitti2": write_vkitti2,
           "nyuv2": write_nyuv2}
