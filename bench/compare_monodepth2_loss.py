"""Our photometric loss (densemtl_lab.photometric) beside the reference's own Monodepth2 loss, on the same inputs.

The reference (github.com/astra-vision/DenseMTL) is not a dependency and cannot be imported in CI, so
this script runs it from a checkout that you name: it loads `vendor/monodepth2/layers.py` and
`vendor/monodepth2/loss.py` directly (the package's `__init__.py` imports modules that the
repository does not ship). Both losses get the same disparities at four scales, frame 0 and its two
neighbours, intrinsics and poses, and the same tie-breaking noise (the same seed before each call);
the script prints one JSON object: each scale's loss, the total, the warped images and the auto-mask,
with the largest differences, and the pose network's transforms from the same (axis-angle,
translation) parameters, both ways round.

    git clone https://github.com/astra-vision/DenseMTL /tmp/DenseMTL      # or any checkout of it
    python bench/compare_monodepth2_loss.py --reference /tmp/DenseMTL

Conventions that differ and are bridged here: the reference indexes pixels by their integer
coordinates and takes K [B, 4, 4] and its inverse; we take the data contract's K [B, 3, 3] with pixel
centres at +0.5 (docs/real_datasets.md), so the reference gets K with its principal point half a pixel
lower. The reference reads frame 0 at each scale from the dataset (resized there); we pass it the
image resized as `photometric_loss` resizes it for the smoothness term.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from densemtl_lab.machine import cpu_model
from densemtl_lab.models.posenet import transformation_from_parameters
from densemtl_lab.photometric import photometric_loss, pixel_index_intrinsics

SCALES = (0, 1, 2, 3)
FRAME_IDS = (0, -1, 1)


def load_reference(checkout: Path) -> types.ModuleType:
    """The reference's `vendor/monodepth2/loss.py` as a module (its sibling `layers.py` loaded with it)."""
    folder = checkout / "vendor" / "monodepth2"
    for name in ("layers.py", "loss.py"):
        if not (folder / name).is_file():
            sys.exit(f"compare_monodepth2_loss: {folder / name} not found; --reference must name a checkout "
                     "of github.com/astra-vision/DenseMTL")
    package = types.ModuleType("reference_monodepth2")
    package.__path__ = [str(folder)]
    sys.modules["reference_monodepth2"] = package
    for name in ("layers", "loss"):
        spec = importlib.util.spec_from_file_location(f"reference_monodepth2.{name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["reference_monodepth2.loss"]


def inputs(batch: int, height: int, width: int, seed: int) -> dict[str, torch.Tensor]:
    """Random but plausible inputs: smooth images, disparities per scale, K and small forward motions."""
    generator = torch.Generator().manual_seed(seed)
    smooth = lambda *shape: F.interpolate(torch.rand(*shape[:-2], shape[-2] // 4, shape[-1] // 4, generator=generator),  # noqa: E731
                                          size=shape[-2:], mode="bilinear", align_corners=False)
    frames = smooth(batch * 3, 3, height, width).reshape(batch, 3, 3, height, width)
    disparities = {s: torch.rand(batch, 1, height // 2 ** s, width // 2 ** s, generator=generator) * 0.3 for s in SCALES}
    K = torch.tensor([[0.58 * width, 0, 0.5 * width], [0, 1.92 * height, 0.5 * height], [0, 0, 1]]).repeat(batch, 1, 1)
    poses = torch.eye(4).repeat(batch, 2, 1, 1)
    poses[:, :, :3, 3] = (torch.rand(batch, 2, 3, generator=generator) - 0.5) * 0.2
    poses[:, 0, 2, 3] += 1.0  # frame -1: the camera stood 1 m behind; frame +1: 1 m ahead
    poses[:, 1, 2, 3] -= 1.0
    return {"image": frames[:, 1], "sources": frames[:, [0, 2]], "disparities": disparities, "K": K, "poses": poses}


def reference_loss(module: types.ModuleType, data: dict[str, torch.Tensor], height: int, width: int,
                   seed: int) -> tuple[dict, dict]:
    """The reference's MonodepthLoss on `data`, with the settings of configs/cityscapes/monodepth/*_SD.yml."""
    batch = data["image"].shape[0]
    loss = module.MonodepthLoss(
        scales=list(SCALES), batch_size=batch, frame_ids=list(FRAME_IDS), height=height, width=width,
        min_depth=0.1, max_depth=100, test_min_depth=1e-3, test_max_depth=80, disparity_smoothness=1e-3,
        no_ssim=False, avg_reprojection=False, disable_automasking=False)
    K = torch.eye(4).repeat(batch, 1, 1)
    K[:, :3, :3] = pixel_index_intrinsics(data["K"])
    x = {("K", 0): K, ("inv_K", 0): torch.linalg.inv(K), ("color", -1, 0): data["sources"][:, 0],
         ("color", 1, 0): data["sources"][:, 1]}
    for s, disparity in data["disparities"].items():
        x["color", 0, s] = data["image"] if s == 0 else F.interpolate(
            data["image"], size=disparity.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
    y = {("disp", s): d for s, d in data["disparities"].items()}
    y["cam_T_cam", 0, -1], y["cam_T_cam", 0, 1] = data["poses"][:, 0], data["poses"][:, 1]
    y.update(loss.generate_images_pred(x, y))
    torch.manual_seed(seed)
    return y, loss.compute_losses(x, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="a checkout of astra-vision/DenseMTL")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 320), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    height, width = args.size
    module = load_reference(args.reference)
    data = inputs(args.batch, height, width, args.seed)
    reference_outputs, reference = reference_loss(module, data, height, width, args.seed + 1)
    torch.manual_seed(args.seed + 1)
    ours = photometric_loss(data["disparities"], data["image"], data["sources"], data["K"], data["poses"])
    generator = torch.Generator().manual_seed(args.seed)
    axis_angle, translation = torch.randn(64, 3, generator=generator) * 0.2, torch.randn(64, 3, generator=generator)
    layers = sys.modules["reference_monodepth2.layers"]
    transform_difference = max(float((transformation_from_parameters(axis_angle, translation, invert) -
                                      layers.transformation_from_parameters(axis_angle[:, None], translation[:, None],
                                                                            invert)).abs().max())
                               for invert in (False, True))
    per_scale = [{"scale": s, "ours": float(ours.per_scale[s]), "reference": float(reference["mono_loss", s])}
                 for s in SCALES]
    warped_difference = max(float((ours.warped[:, i] - reference_outputs["color", f, 0]).abs().max())
                            for i, f in enumerate(FRAME_IDS[1:]))
    report = {
        "inputs": {"batch": args.batch, "size": [height, width], "seed": args.seed, "scales": list(SCALES)},
        "loss": {"ours": float(ours.loss), "reference": float(reference["mono_loss"]),
                 "abs_difference": abs(float(ours.loss) - float(reference["mono_loss"]))},
        "per_scale": per_scale,
        "max_abs_difference": {
            "per_scale_loss": max(abs(row["ours"] - row["reference"]) for row in per_scale),
            "warped_images_scale_0": warped_difference,
            "automask_pixels_differing": int((ours.automask != reference["automask"]).sum()),
            "pose_transforms": transform_difference,
        },
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": cpu_model(),
                    "machine": platform.machine()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
