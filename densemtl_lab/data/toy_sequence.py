"""Toy sequences for self-supervised depth: frames -1, 0, +1 of one toy scene from a camera driving along it.

Monodepth2-style depth learning (the reference's semi-supervised depth setting) needs, for each
labelled frame, its neighbours in time and the camera's intrinsics. A toy sequence sample is the toy
scene of the same index (`toy.render_toy_arrays`: frame 0, with all its labels, byte for byte) plus
the frames the camera sees one step before and after, and the true relative poses (for tests and a
pose-error metric; a self-supervised run never reads them).

Motion, drawn per sample from its own generator stream: the camera moves `forward_m` ~ U(0.8, 1.6) m
per frame along the street (+z of the scene; 8-16 m/s at 10 frames/s) and drifts `lateral_m` ~
U(-0.1, 0.1) m per frame across it, without turning: the ray caster (`toy_render`) is built for a
camera that only pitches, so the frames differ by a translation (no yaw; docs/faithfulness.md). The
scene does not move (Monodepth2's auto-mask exists for what does; nothing here needs it).

Appearance: each frame is shaded with the same draws (colours, sun, texture lattice), anchored to
the scene (`Scene.origin`), so a surface keeps its paint from frame to frame; the target domain's
sensor noise is drawn anew per frame. Poses: `poses[i]` is T_{f<-0}, the 4x4 transform taking a point
from camera 0's frame to frame f's (f = FRAME_IDS[i] of the neighbours), X_f = X_0 - R^T c_f with R
the camera's pitch and c_f its position in the scene.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from densemtl_lab.data.toy import ToyConfig, ToyScenes, arrays_to_sample, render_image, render_toy_arrays
from densemtl_lab.data.toy_render import Render, render_scene
from densemtl_lab.data.toy_scene import SCENE_STYLES, Camera, Scene, sample_scene

#: The neighbours of frame 0 that a sample holds, in order.
NEIGHBOURS: tuple[int, ...] = (-1, 1)
#: The generator streams of a sample (beside its own): the motion, and each neighbour's sensor noise.
_MOTION_STREAM = 1
_NOISE_STREAM = {-1: 2, 1: 3}


@dataclass(frozen=True)
class Motion:
    """The camera's displacement per frame, in metres, in the scene's horizontal plane."""

    forward_m: float  # along the street (+z)
    lateral_m: float  # across it (+x)

    def position(self, frame: int) -> tuple[float, float, float]:
        """The camera's position c_f in the scene at frame `frame` (frame 0 at the origin)."""
        return (frame * self.lateral_m, 0.0, frame * self.forward_m)


def sample_motion(rng: np.random.Generator) -> Motion:
    """Forward ~ U(0.8, 1.6) m and lateral ~ U(-0.1, 0.1) m per frame."""
    return Motion(float(rng.uniform(0.8, 1.6)), float(rng.uniform(-0.1, 0.1)))


def move_camera(scene: Scene, position: tuple[float, float, float]) -> Scene:
    """The scene as a camera standing at `position` (scene frame, y = 0: on the same ground) sees it."""
    x, y, z = position
    if y != 0:
        raise ValueError(f"the camera moves on the ground plane; position y={y} must be 0")
    return dataclasses.replace(
        scene, road_centre_x=scene.road_centre_x - x,
        boxes=scene.boxes - np.array([x, 0.0, z, x, 0.0, z]),
        cylinders=scene.cylinders - np.array([x, z, 0.0, 0.0, 0.0]),
        spheres=scene.spheres - np.array([x, 0.0, z, 0.0]),
        origin=(scene.origin[0] + x, scene.origin[1], scene.origin[2] + z))


def relative_pose(camera: Camera, position: tuple[float, float, float]) -> np.ndarray:
    """T_{f<-0} [4, 4] float32: camera-0 coordinates to those of the camera at `position` (no rotation)."""
    cos, sin = np.cos(camera.pitch_rad), np.sin(camera.pitch_rad)
    pitch = np.array([[1.0, 0.0, 0.0], [0.0, cos, sin], [0.0, -sin, cos]])  # d_world = R d_camera
    pose = np.eye(4)
    pose[:3, 3] = -pitch.T @ np.asarray(position)
    return pose.astype(np.float32)


@dataclass(frozen=True)
class SequenceView:
    """Frame `frame` of a toy sequence before shading: what the camera sees there and how it got there."""

    frame: int
    scene: Scene  # the scene as the camera at this frame sees it
    render: Render  # its ray-cast geometry (depth, normals, instance ids, ...)
    look: np.random.Generator  # frame 0's appearance draws, replayed: shade with it for the same paint
    pose: np.ndarray  # T_{f<-0} [4, 4] float32 (the identity for frame 0)


def sequence_views(config: ToyConfig, index: int, frames: tuple[int, ...] = NEIGHBOURS) -> Iterator[SequenceView]:
    """The views of sample `index` at `frames` (0 included or not), each ready to shade."""
    rng = config.rng(index)
    scene = sample_scene(rng, config.size, SCENE_STYLES[config.domain])
    look = rng.bit_generator.state  # the appearance draws that frame 0 made
    motion = sample_motion(config.rng(index, _MOTION_STREAM))
    for frame in frames:
        position = motion.position(frame)
        moved = move_camera(scene, position) if frame else scene
        replay = np.random.default_rng()
        replay.bit_generator.state = look
        yield SequenceView(frame, moved, render_scene(moved), replay, relative_pose(scene.camera, position))


def render_toy_sequence_arrays(config: ToyConfig, index: int) -> dict[str, np.ndarray]:
    """Sample `index`: `render_toy_arrays(config, index)` (frame 0 and its labels) plus `frames` uint8
    [2, 3, H, W] (frames -1 and +1), `poses` float32 [2, 4, 4] (T_{f<-0} of each) and `motion` float32
    [2] (forward, lateral metres per frame)."""
    views = list(sequence_views(config, index))
    frames = [render_image(config, view.scene, view.render, view.look, config.rng(index, _NOISE_STREAM[view.frame]))
              for view in views]
    motion = sample_motion(config.rng(index, _MOTION_STREAM))
    return {**render_toy_arrays(config, index), "frames": np.stack(frames),
            "poses": np.stack([view.pose for view in views]),
            "motion": np.array([motion.forward_m, motion.lateral_m], dtype=np.float32)}


class ToySequences(ToyScenes):
    """Toy scenes with their neighbouring frames: the data contract plus `frames` [2, 3, H, W] float32 in
    [0, 1] (frames -1 and +1), `poses` [2, 4, 4] (T_{f<-0}) and `frame_ids` (-1, 1).

    The same arguments as `ToyScenes`; frame 0 and its labels are `ToyScenes`' sample of the index.
    Always rendered on the fly (three renders a sample): a stored toy dataset holds single frames.
    """

    def arrays(self, index: int) -> dict[str, np.ndarray]:
        """Sample `index` as numpy arrays (see `render_toy_sequence_arrays`)."""
        return render_toy_sequence_arrays(self.config, self._check_index(index))

    def __getitem__(self, index: int) -> dict[str, Any]:
        arrays = self.arrays(index)
        sample = arrays_to_sample(arrays, self.sample_name(index), f"toy-{self.config.domain}")
        sample["frames"] = torch.from_numpy(np.divide(arrays["frames"], np.float32(255), dtype=np.float32))
        sample["poses"] = torch.from_numpy(arrays["poses"])
        sample["frame_ids"] = torch.tensor(NEIGHBOURS)
        return self.transform(sample) if self.transform is not None else sample
