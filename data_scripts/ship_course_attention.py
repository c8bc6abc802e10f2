"""Write the attention caches that notebook 05 explores out of the box, from a trained DenseMTL checkpoint.

    python data_scripts/ship_course_attention.py studies/architectures-course/runs/densemtl-s0/checkpoints/best.pt

The default output is the file the package ships (densemtl_lab/resources/course_attention.npz): one
`AttentionCache` per validation scene (`--images`), with where the model came from (checkpoint,
profile, seed, steps, commit, date), its validation metrics and a query pixel per class in each
scene (road, building, sky, car), as `explorer.load_caches` returns them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from densemtl_lab.data.build import build_dataset
from densemtl_lab.data.classes import CITYSCAPES_CLASSES
from densemtl_lab.study import provenance
from densemtl_lab.train import load_trained_model
from densemtl_lab.viz.explorer import COURSE_ATTENTION, AttentionCache, query_points, save_caches

#: Road, building, sky and car (train ids): a query pixel of each, as notebook 05 picks them.
QUERY_CLASSES = (0, 2, 10, 13)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a DenseMTL run's checkpoints/best.pt")
    parser.add_argument("--images", type=int, nargs="+", default=[0, 1, 2, 3],
                        help="validation scenes to keep (default: 0 1 2 3)")
    parser.add_argument("--out", type=Path, default=COURSE_ATTENTION, help=f"default: {COURSE_ATTENTION}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model, config, state = load_trained_model(args.checkpoint)
    except (OSError, ValueError) as error:
        print(f"ship_course_attention: error: {error}", file=sys.stderr)
        return 2
    dataset = build_dataset(config.data, "val", "target" if config.data.target_dataset else None,
                            config.model.task_names)
    samples = [dataset[index] for index in args.images]
    caches = [AttentionCache.from_model(model, sample) for sample in samples]
    points = [{CITYSCAPES_CLASSES[class_id]: list(point) for class_id, point in
               query_points(sample["semseg"], QUERY_CLASSES).items()} for sample in samples]
    metrics_file = args.checkpoint.parents[1] / "metrics.json"
    code = provenance([])
    about = {"checkpoint": str(args.checkpoint), "profile": config.profile, "model": config.model.name,
             "tasks": config.model.tasks, "seed": config.train.seed, "step": state.get("step"),
             "scenes": {"domain": config.data.domain, "severity": config.data.severity, "split": "val",
                        "indices": args.images},
             "query_points": points,
             "metrics": json.loads(metrics_file.read_text())["metrics"] if metrics_file.is_file() else None,
             "written_with": {key: code[key] for key in ("commit", "date", "torch")}}
    path = save_caches(caches, args.out, about)
    print(f"Wrote {len(caches)} scene(s) to {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
