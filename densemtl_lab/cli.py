"""The `densemtl-lab` command (also `python -m densemtl_lab`).

    densemtl-lab train --profile quick --model densemtl --tasks SDN [-p train.steps=500 ...]
    densemtl-lab train --tasks SD --adapt adversarial --target toy   (domain adaptation, densemtl_lab.uda)
    densemtl-lab eval CHECKPOINT [--split val] [--out FILE]
    densemtl-lab diagnose CHECKPOINT [--out FILE]    (alpha, attention entropy, ablation costs)
    densemtl-lab predict CHECKPOINT IMAGE... [--out DIR]
    densemtl-lab study NAME [--profile quick] [--seeds 5] [--shard K/N]   (grids of runs x seeds)
    densemtl-lab study NAME --profile course --verify [RUN]   (retrain one shipped run, compare)
    densemtl-lab run [--profile quick] [--only 03,04]      (the notebook batch runner)
    densemtl-lab profiles

Several processes: `torchrun --nproc_per_node=N -m densemtl_lab train ...`. Errors the user can fix
(a bad value, a missing file or folder, a corrupt checkpoint) print one line and exit with status 2;
a NaN/inf loss exits with 1; Ctrl-C during training saves a checkpoint and exits with 130. Set
DENSEMTL_DEBUG=1 to see the full traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple

from densemtl_lab.config import (
    ADAPT_METHODS, PROFILES, ConfigError, ExperimentConfig, get_profile, load_config, override,
)

EXIT_USER_ERROR = 2
EXIT_TRAINING_FAILED = 1
EXIT_INTERRUPTED = 130


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--set", dest="assignments", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="change one config value (repeatable), e.g. -p train.steps=10")
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1 or mps")


# --- train --------------------------------------------------------------------------------------------

def _add_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="quick", help=f"one of {', '.join(PROFILES)} (default quick)")
    parser.add_argument("--config", type=Path, default=None,
                        help="a YAML experiment file (its `profile:` key, else --profile, is the base)")
    parser.add_argument("--model", default=None, help="stl, stl-deeplab, mtl, padnet, 3ways, densemtl")
    parser.add_argument("--tasks", default=None, help="task letters, e.g. SDN")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--data-root", default=None, help="folder of a real dataset (sets data.root)")
    parser.add_argument("--adapt", default=None, choices=ADAPT_METHODS,
                        help="domain adaptation to --target: none (source only), adversarial, entropy, or "
                             "oracle (trained on the labelled target); sets adapt.method")
    parser.add_argument("--target", default=None,
                        help="target domain: toy (the toy target domain) or a real dataset name; sets "
                             "data.target_dataset (validation then runs on it)")
    parser.add_argument("--target-root", default=None, help="folder of the target dataset (sets data.target_root)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="run folder (default runs/<profile>-<model>-<tasks>[-<adapt method>]-s<seed>)")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="parent of default run folders")
    parser.add_argument("--resume", action="store_true", help="continue the run folder's newest checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="clear an existing run folder first")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_common(parser)


def experiment_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The profile or file, then the named options, then the -p assignments."""
    if args.config is not None:
        config = load_config(args.config, base=args.profile)
    else:
        config = get_profile(args.profile)
    shortcuts = {"model.name": args.model, "model.tasks": args.tasks, "train.seed": args.seed,
                 "train.steps": args.steps, "data.root": args.data_root, "train.device": args.device,
                 "adapt.method": args.adapt, "data.target_dataset": args.target,
                 "data.target_root": args.target_root,
                 "train.quiet": True if args.quiet else None}
    assignments = [f"{key}={json.dumps(value) if not isinstance(value, str) else value}"
                   for key, value in shortcuts.items() if value is not None]
    return override(config, *assignments, *args.assignments)


def _run_train(args: argparse.Namespace) -> int:
    from densemtl_lab import uda  # noqa: F401  (registers the adaptation methods with the trainer)
    from densemtl_lab.distributed import shutdown
    from densemtl_lab.run_folder import default_run_dir
    from densemtl_lab.train import Trainer

    config = experiment_from_args(args)
    run_dir = args.run_dir if args.run_dir is not None else default_run_dir(config, args.runs)
    try:  # the Trainer joins the torchrun process group, if any: leave it however the run ends
        trainer = Trainer(config, run_dir, resume=args.resume, overwrite=args.overwrite)
        result = trainer.fit()
    finally:
        shutdown()
    if not trainer.context.is_main:
        return 0
    if result.interrupted:
        print(f"Interrupted at step {result.step}: checkpoint {result.last_checkpoint}; continue with "
              f"densemtl-lab train --run-dir {run_dir} --resume (and the same options).")
        return EXIT_INTERRUPTED
    print(_training_summary(result, config.train.steps, run_dir))
    print(json.dumps(result.metrics, indent=2))
    return 0


def _training_summary(result: Any, steps: int, run_dir: Path) -> str:
    """What this call did: trained, or found the run already complete (perhaps beyond `steps`)."""
    if result.step > steps:
        return (f"Nothing trained: {run_dir} was already complete at step {result.step}, beyond the "
                f"{steps} steps asked for (train.steps={steps}); its metrics are those of step {result.step}.")
    if result.step == result.start_step:
        return f"Nothing trained: {run_dir} was already complete at step {result.step}."
    resumed = f" (resumed at step {result.start_step})" if result.start_step else ""
    return f"Trained {result.step} steps into {run_dir}{resumed}."


# --- eval ---------------------------------------------------------------------------------------------

def _add_eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--split", default="val", help="dataset split to evaluate (default val)")
    parser.add_argument("--out", type=Path, default=None,
                        help="metrics JSON file (default: beside the checkpoint, <name>.metrics.json)")
    parser.add_argument("--reference-quirks", action="store_true",
                        help="compute the metrics as the reference code does, quirks included "
                             "(docs/faithfulness.md), to compare with its published numbers")
    _add_common(parser)


def _evaluation_config(config: ExperimentConfig, args: argparse.Namespace) -> ExperimentConfig:
    """The checkpoint's config with the user's data/train changes (the model is fixed by the weights)."""
    fixed = [item for item in args.assignments if not item.startswith(("data.", "train."))]
    if fixed:
        raise ConfigError(f"-p {fixed[0]}: only data.* and train.* can change for a trained model")
    device = [f"train.device={args.device}"] if args.device else []
    return override(config, "train.eval_batches=null", *device, *args.assignments)


def _trained_model_on_split(args: argparse.Namespace) -> tuple[Any, ExperimentConfig, Any, Any]:
    """(model on its device, evaluation config, device, dataset of `args.split`) for `args.checkpoint`."""
    from densemtl_lab.data.build import build_dataset
    from densemtl_lab.distributed import ProcessContext, process_device
    from densemtl_lab.train import load_trained_model

    model, config, _ = load_trained_model(args.checkpoint)
    config = _evaluation_config(config, args)
    device = process_device(ProcessContext(), config.train.device)
    target = "target" if config.data.target_dataset else None
    dataset = build_dataset(config.data, args.split, target, config.model.task_names)
    return model.to(device), config, device, dataset


def _run_eval(args: argparse.Namespace) -> int:
    from densemtl_lab.atomic import write_json_atomic
    from densemtl_lab.evaluation import evaluate
    from densemtl_lab.train import with_delta_m

    model, config, device, dataset = _trained_model_on_split(args)
    metrics = with_delta_m(evaluate(model, dataset, device=device, reference_quirks=args.reference_quirks,
                                    **config.evaluation_options()), config)
    out = args.out if args.out is not None else args.checkpoint.with_suffix(".metrics.json")
    write_json_atomic(out, {"checkpoint": str(args.checkpoint), "split": args.split, "images": len(dataset),
                            "reference_quirks": args.reference_quirks, "metrics": metrics})
    print(json.dumps(metrics, indent=2))
    print(f"Wrote {out}")
    return 0


# --- diagnose -----------------------------------------------------------------------------------------

def _add_diagnose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a DenseMTL checkpoint (best.pt or step_*.pt)")
    parser.add_argument("--split", default="val", help="dataset split to measure on (default val)")
    parser.add_argument("--images", type=int, default=16, help="images for the attention entropy (default 16)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file (default: beside the checkpoint, <name>.diagnostics.json)")
    _add_common(parser)


def _run_diagnose(args: argparse.Namespace) -> int:
    from densemtl_lab.atomic import write_json_atomic
    from densemtl_lab.diagnostics import diagnose

    model, config, device, dataset = _trained_model_on_split(args)
    report = diagnose(model, dataset, config, device, entropy_images=args.images)
    out = args.out if args.out is not None else args.checkpoint.with_suffix(".diagnostics.json")
    write_json_atomic(out, {"checkpoint": str(args.checkpoint), "split": args.split, **report})
    print(json.dumps({key: report[key] for key in ("alpha", "entropy", "main_metric_change")}, indent=2))
    print(f"Wrote {out}")
    return 0


# --- predict ------------------------------------------------------------------------------------------

def _add_predict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the pictures (default: beside each input image); each input "
                             "gives <stem>_<task>.png")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace pictures that already exist (default: refuse before writing any)")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="network input size (default: the training size)")
    parser.add_argument("--device", default="auto")


def _read_image(path: Path) -> Any:
    """RGB float tensor [3, H, W] in [0, 1]."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    if path.is_dir():
        raise IsADirectoryError(f"image {path} is a folder; pass its image files (e.g. {path}/*.png)")
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"image {path} cannot be read ({error}); pass a PNG or JPEG file") from None
    return torch.from_numpy(array).permute(2, 0, 1)  # 3, H, W


def predict_image(model: Any, image: Any, size: tuple[int, int]) -> dict[str, Any]:
    """Every task's prediction (label units, tasks.decode_prediction) at the image's own size."""
    import torch
    import torch.nn.functional as F

    from densemtl_lab.tasks import decode_prediction

    height, width = image.shape[-2:]
    device = next(model.parameters()).device
    batch = F.interpolate(image[None].to(device), size=size, mode="bilinear", align_corners=False,
                          antialias=True)  # 1, 3, h, w
    with torch.inference_mode():
        outputs = model(batch)
    predictions = {}
    for task in model.tasks:
        raw = F.interpolate(outputs[task][0].float(), size=(height, width), mode="bilinear",
                            align_corners=False)  # 1, C, H, W
        predictions[task] = decode_prediction(task, raw)[0].cpu()
    return predictions


def prediction_paths(images: list[Path], tasks: list[str], out: Path | None,
                     overwrite: bool) -> dict[Path, list[Path]]:
    """Each input's output files, `<out or its folder>/<stem>_<task>.png`.

    Refuses (ValueError) two inputs whose outputs would share a name, and, unless `overwrite`, outputs
    that exist already: nothing is written over silently.
    """
    planned: dict[Path, list[Path]] = {}
    writer_of: dict[Path, Path] = {}
    for image in images:
        folder = out if out is not None else image.parent
        planned[image] = [folder / f"{image.stem}_{task}.png" for task in tasks]
        for target in planned[image]:
            if target in writer_of:
                raise ValueError(f"images {writer_of[target]} and {image} would both write {target}; "
                                 "predict them into separate --out folders")
            writer_of[target] = image
    existing = [target for target in writer_of if target.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FileExistsError(f"{existing[0]}{more} already exists; pass --overwrite to replace it or "
                              "choose another --out folder")
    return planned


def _run_predict(args: argparse.Namespace) -> int:
    import io

    from PIL import Image

    from densemtl_lab.atomic import write_bytes_atomic
    from densemtl_lab.data.transforms import Resize
    from densemtl_lab.runtime import select_device
    from densemtl_lab.train import load_trained_model
    from densemtl_lab.viz import colourise

    model, config, state = load_trained_model(args.checkpoint, select_device(args.device))
    size = Resize(args.size).size if args.size else config.data.size
    if size[0] % 16 or size[1] % 16:
        raise ConfigError(f"--size {size[0]} {size[1]} must be divisible by 16")
    palette = state.get("classes", {}).get("palette")
    images = [(path, _read_image(path)) for path in args.images]  # all readable before writing any
    planned = prediction_paths(args.images, list(model.tasks), args.out, args.overwrite)
    for path, image in images:
        predictions = predict_image(model, image, size)
        for task, target in zip(model.tasks, planned[path]):
            picture = io.BytesIO()
            Image.fromarray(colourise(task, predictions[task], palette)).save(picture, format="PNG")
            write_bytes_atomic(target, picture.getvalue())
            print(target)
    return 0


# --- study --------------------------------------------------------------------------------------------

def _add_study(parser: argparse.ArgumentParser) -> None:
    from densemtl_lab.study import STUDIES

    parser.add_argument("name", choices=tuple(STUDIES), metavar="NAME",
                        help="; ".join(f"{name}: {spec.description}" for name, spec in STUDIES.items()))
    parser.add_argument("--profile", default="quick", help="the profile every run starts from (default quick)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds 0..N-1 (default: the study's own number, 5 or 3)")
    parser.add_argument("--out", type=Path, default=None,
                        help="study folder (default studies/<name>-<profile>); runs go to <out>/runs")
    parser.add_argument("--shard", default=None, metavar="K/N",
                        help="train only the K-th of N fixed, disjoint shares of the runs (e.g. a job array)")
    parser.add_argument("--verify", nargs="?", const="", default=None, metavar="RUN",
                        help="retrain one run of the shipped results at its recorded config (default: the "
                             "first compared model, first seed) into <out>/verify and compare its metrics")
    parser.add_argument("--tolerance", type=float, default=0.05,
                        help="--verify: largest relative difference of a main metric (default 0.05)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_common(parser)


def _run_study(args: argparse.Namespace) -> int:
    from densemtl_lab import uda  # noqa: F401  (registers the adaptation methods with the trainer)
    from densemtl_lab.study import get_study, parse_shard, run_study

    spec = get_study(args.name)
    get_profile(args.profile)  # an unknown profile stops here, before anything is created
    out = args.out if args.out is not None else Path("studies") / f"{args.name}-{args.profile}"
    if args.verify is not None:
        return _verify_study(args, out)
    seeds = list(range(args.seeds if args.seeds is not None else spec.default_seeds))
    outcome = run_study(spec, args.profile, out, seeds, extra=tuple(args.assignments), shard=parse_shard(args.shard),
                        device=args.device, command=["densemtl-lab", *args.argv], progress=not args.quiet)
    print(f"Trained {len(outcome.trained)} run(s), {len(outcome.skipped)} already complete; "
          f"summary: {outcome.summary_path}")
    if outcome.missing:
        print(f"{len(outcome.missing)} run(s) of the study not complete yet (other shards?): "
              f"{', '.join(outcome.missing[:6])}{' ...' if len(outcome.missing) > 6 else ''}")
    return 0


def _verify_study(args: argparse.Namespace, out: Path) -> int:
    from densemtl_lab.study import default_verify_run, environment_differences, load_shipped, verify_run

    summary = load_shipped(args.name, args.profile)
    run_name = args.verify or default_verify_run(summary)
    provenance = summary["provenance"]
    print(f"Verifying {run_name} of the shipped {args.name} study ({args.profile}), recorded on "
          f"{provenance['date']} at commit {str(provenance['commit'])[:10]} with torch {provenance['torch']}, "
          f"{provenance.get('threads', '?')} threads, on {provenance['machine']['cpu']}")
    differences = environment_differences(provenance)
    if differences:
        print(f"Not the recorded machine ({'; '.join(differences)}): its metrics can move beyond the tolerance "
              "(docs/benchmarks.md, \"The same --verify on another machine\")")
    checks = verify_run(summary, run_name, out / "verify" / run_name, tolerance=args.tolerance,
                        device=args.device)
    for check in checks:
        verdict = ("ok" if check.agrees else "DIFFERS") if check.main else ""
        print(f"  {check.task}/{check.metric:<12} recorded {check.recorded:10.4f}  now {check.measured:10.4f}  "
              f"({100 * check.relative_difference:5.2f} %) {verdict}")
    failed = [check for check in checks if not check.agrees]
    if failed:
        print(f"Differs: {', '.join(f'{c.task}/{c.metric}' for c in failed)} beyond {100 * args.tolerance:g} %")
    else:
        print(f"Agrees: every main metric within {100 * args.tolerance:g} %")
    return EXIT_TRAINING_FAILED if failed else 0


# --- run and profiles ---------------------------------------------------------------------------------

def _add_run(parser: argparse.ArgumentParser) -> None:
    from densemtl_lab.run import add_arguments

    add_arguments(parser)


def _run_run(args: argparse.Namespace) -> int:
    from densemtl_lab.run import run_from_args

    return run_from_args(args)


def _add_profiles(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", default=None, help="print this profile's full config as JSON")


def _run_profiles(args: argparse.Namespace) -> int:
    if args.name is not None:
        print(json.dumps(get_profile(args.name).to_dict(), indent=2))
        return 0
    for name, config in PROFILES.items():
        print(f"{name:26s} {config.data.dataset} {config.data.size[0]}x{config.data.size[1]}, "
              f"{config.model.backbone}, batch {config.train.batch_size}, {config.train.steps} steps")
    return 0


class Command(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {
    "train": Command("train a model (one run folder per run)", _add_train, _run_train),
    "eval": Command("evaluate a checkpoint and write its metrics JSON", _add_eval, _run_eval),
    "diagnose": Command("is a DenseMTL's exchange used? alpha, attention entropy, ablation costs",
                        _add_diagnose, _run_diagnose),
    "predict": Command("colourised predictions of a checkpoint for image files", _add_predict, _run_predict),
    "study": Command("a named grid of runs x seeds, resumable, with seed statistics", _add_study, _run_study),
    "run": Command("run the lesson notebooks headless and write a report", _add_run, _run_run),
    "profiles": Command("list the named profiles (or print one)", _add_profiles, _run_profiles),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densemtl-lab", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(handler=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a study records as its command
    debug = os.environ.get("DENSEMTL_DEBUG") == "1"
    try:
        return args.handler(args)
    except (ValueError, OSError) as error:
        if debug:
            raise
        print(f"densemtl-lab: error: {str(error).splitlines()[0] if str(error) else type(error).__name__}",
              file=sys.stderr)
        return EXIT_USER_ERROR
    except FloatingPointError as error:
        if debug:
            raise
        print(f"densemtl-lab: error: {error}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    except KeyboardInterrupt:
        print("densemtl-lab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
