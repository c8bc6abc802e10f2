"""Write a toy-scene dataset to disk in shards (format: densemtl_lab/data/toy_store.py).

    python data_scripts/make_toy_dataset.py OUT --length 2000 --size 128 256 --domain source

Running the same command again after an interruption resumes it: finished shards are kept.
Read the result with `densemtl_lab.data.ToyScenes.from_disk(OUT)`.
"""

from __future__ import annotations

import argparse
import sys

from densemtl_lab.data.toy import DOMAINS, SPLITS, ToyConfigError, ToyScenes
from densemtl_lab.data.toy_store import ToyStoreError, write_toy_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output folder (created; must be empty unless resuming)")
    parser.add_argument("--length", type=int, required=True, help="number of samples")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 256), metavar=("H", "W"),
                        help="image size, multiples of 16 (default: 128 256)")
    parser.add_argument("--domain", choices=DOMAINS, default="source")
    parser.add_argument("--severity", type=float, default=0.5, help="target-domain shift in [0, 1]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=SPLITS, default="train")
    parser.add_argument("--shard-size", type=int, default=100, help="samples per shard file")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the toy dataset files in a non-empty OUT")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        dataset = ToyScenes(args.length, tuple(args.size), args.domain, args.severity, args.seed, args.split)
        report = write_toy_dataset(args.out, dataset, shard_size=args.shard_size, workers=args.workers,
                                   overwrite=args.overwrite, progress=not args.quiet)
    except (ToyConfigError, ToyStoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(report.written)} shards ({report.images_written} images) to {report.root} in {report.seconds:.1f} s"
          f"; {len(report.skipped)} shards were already there")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
