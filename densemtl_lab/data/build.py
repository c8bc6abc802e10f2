"""Datasets from a `DataConfig`: the toy scenes or one of the real loaders, with the training augmentation.

The real loaders are imported only when asked for, so the toy lessons never touch their code. The
training split gets the reference's augmentation (random horizontal flip, as in the official
`dataset/base.py`) and, for the VKITTI2 -> Cityscapes recipe, a random crop (`configs/da/vk2cs/fs_bs2.yml`);
other splits are only resized by their loader.
Random transforms draw from torch's global generator: the trainer restores it on resume, and a
DataLoader seeds it per worker.
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Any, Iterable

from torch.utils.data import Dataset

from densemtl_lab.config import ConfigError, DataConfig
from densemtl_lab.data.transforms import Compose, RandomCrop, RandomHorizontalFlip

#: Real dataset name -> (module, class); imported lazily.
REAL_DATASETS: dict[str, tuple[str, str]] = {
    "cityscapes": ("densemtl_lab.data.cityscapes", "Cityscapes"),
    "synthia": ("densemtl_lab.data.synthia", "Synthia"),
    "vkitti2": ("densemtl_lab.data.vkitti2", "VirtualKitti2"),
    "nyuv2": ("densemtl_lab.data.nyuv2", "NYUv2"),
}
#: Where each dataset's preparation script lives (named in the missing-root error).
_PREPARE_HINT = "data_scripts/prepare_{name}.py"
#: Loader parameters that other config keys set (data.options may not).
_SET_ELSEWHERE = frozenset({"self", "root", "split", "size", "tasks", "transform", "num_classes", "sequence"})


class DataRootError(ConfigError):
    """A real dataset asked for without a usable data root."""


def training_transform(data: DataConfig) -> Compose | None:
    """The augmentation of the training split: random crop (when set) then random horizontal flip."""
    steps = []
    if data.crop is not None:
        steps.append(RandomCrop(data.crop))
    if data.hflip:
        steps.append(RandomHorizontalFlip(0.5))
    return Compose(tuple(steps)) if steps else None


def _loader_options(loader: type, name: str, data: DataConfig, key: str) -> dict:
    """The loader's keyword options: `key` (data.options or data.target_options) plus data.classes."""
    options = dict(getattr(data, key.removeprefix("data.")) or {})
    parameters = inspect.signature(loader).parameters
    accepted = set(parameters) - _SET_ELSEWHERE
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(f"{key} names {', '.join(unknown)}, which {name!r} does not take; its options are "
                          f"{', '.join(sorted(accepted)) or 'none'} (classes: data.classes)")
    if data.classes is not None:
        if "num_classes" in parameters:
            options["num_classes"] = data.classes
        elif data.classes != loader.num_classes:
            raise ConfigError(f"data.classes={data.classes} is not available for {name!r}, which "
                              f"has {loader.num_classes} classes; set data.classes={loader.num_classes}")
    return options


def _real_dataset(name: str, root: str | None, parameter: str, options_key: str, data: DataConfig, split: str,
                  size: tuple[int, int], tasks: Iterable[str] | None, transform: Compose | None,
                  sequence: bool = False) -> Dataset:
    if root is None or not Path(root).expanduser().is_dir():
        state = " is not set" if root is None else f"={root!r} is not a folder"
        raise DataRootError(f"{parameter}{state} for dataset {name!r}; pass -p {parameter}=/path/to/"
                            f"{name} (check it with {_PREPARE_HINT.format(name=name)})")
    root = Path(root).expanduser()
    module_name, class_name = REAL_DATASETS[name]
    loader = getattr(importlib.import_module(module_name), class_name)
    options = _loader_options(loader, name, data, options_key)
    cache = prepared_cache(root)
    if sequence:
        if cache is not None:
            raise ConfigError(f"data.sequence=true reads frame triplets, but {parameter}={str(root)!r} is a prepared "
                              "cache of single frames; point it at the extracted dataset")
        options["sequence"] = True
    if cache is not None:
        _check_cache(cache, root, parameter, name, size, loader, options)
        from densemtl_lab.data.prepare import PreparedDataset

        return PreparedDataset(root, split=split, size=size, tasks=tasks, transform=transform)
    return loader(root, split=split, size=size, tasks=tasks, transform=transform, **options)


def prepared_cache(root: Path) -> dict[str, Any] | None:
    """The manifest of a resized cache written by `data_scripts/prepare_<dataset>.py --size` at `root`."""
    manifest = root / "manifest.json"
    if not (manifest.is_file() and (root / "cache" / "settings.json").is_file()):
        return None
    values = json.loads(manifest.read_text())
    return values if values.get("size") else None


def _check_cache(cache: dict[str, Any], root: Path, parameter: str, name: str, size: tuple[int, int],
                 loader: type, options: dict[str, Any]) -> None:
    """Refuse a prepared cache of another dataset, size or loader options than the config asks for."""
    if cache["dataset"] != name:
        raise ConfigError(f"{parameter}={str(root)!r} is a prepared cache of {cache['dataset']!r}, "
                          f"not of {name!r}")
    if tuple(cache["size"]) != tuple(size):
        height, width = cache["size"]
        raise ConfigError(f"{parameter}={str(root)!r} caches {name} at {height}x{width}, but the working size "
                          f"is {size[0]}x{size[1]}; set the size to [{height}, {width}] or prepare a cache "
                          f"at this size")
    defaults = {key: value.default for key, value in inspect.signature(loader).parameters.items()}
    made_with = {**defaults, **cache.get("options", {})}
    differ = {key: value for key, value in options.items()
              if _as_json(made_with.get(key)) != _as_json(value)}
    if differ:
        listed = ", ".join(f"{key}={made_with.get(key)!r}, asked {value!r}" for key, value in differ.items())
        raise ConfigError(f"{parameter}={str(root)!r} was prepared with other loader options ({listed}); "
                          f"prepare a cache with them or read the raw {name} folder")


def _as_json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def build_dataset(data: DataConfig, split: str, domain: str | None = None,
                  tasks: Iterable[str] | None = None) -> Dataset:
    """The dataset of `split` ("train" or "val") described by `data`.

    The toy scenes are rendered on the fly, or, with `data.root`, read from `<root>/<split>` (written by
    data_scripts/make_toy_dataset.py).
    `domain`: None uses `data.domain` (toy) or `data.dataset`; "target" picks the adaptation target
    (`data.target_dataset` at `data.target_size`, or the toy target domain). The source's "train"
    reads `data.train_split`. `tasks` limits the labels a real loader reads. With `data.sequence`, the toy
    "train" split is `ToySequences` (each sample with frames -1 and +1).
    """
    if domain not in (None, "source", "target"):
        raise ConfigError(f"domain={domain!r} must be None, 'source' or 'target'")
    name, root, parameter, options_key, size = data.dataset, data.root, "data.root", "data.options", data.size
    transform = training_transform(data) if split == "train" else None
    sequence = data.sequence and split == "train" and domain != "target"  # frame triplets to learn depth from
    if domain == "target":
        size = data.target_size or data.size
        if data.target_dataset is not None:
            name, root, parameter = data.target_dataset, data.target_root, "data.target_root"
            options_key = "data.target_options"
    elif split == "train":
        split = data.train_split
    if name != "toy":
        return _real_dataset(name, root, parameter, options_key, data, split, size, tasks, transform, sequence)
    from densemtl_lab.data.toy import ToyScenes

    if root is not None:
        return _toy_from_disk(Path(root).expanduser() / split, parameter, size, transform)
    length = data.train_length if split == "train" else data.val_length
    scenes = ToyScenes
    if sequence:  # validation keeps single frames
        from densemtl_lab.data.toy_sequence import ToySequences as scenes
    return scenes(length, size=size, domain=domain or data.domain, severity=data.severity,
                  seed=data.scene_seed, split=split, transform=transform)


def _toy_from_disk(folder: Path, parameter: str, size: tuple[int, int], transform: Compose | None) -> Dataset:
    """A toy split written by data_scripts/make_toy_dataset.py into <root>/<split>."""
    from densemtl_lab.data.toy import ToyScenes

    if not (folder / "manifest.json").is_file():
        raise DataRootError(f"{parameter}: {folder} holds no toy dataset; write one per split with "
                            f"python data_scripts/make_toy_dataset.py {folder} --split {folder.name}")
    dataset = ToyScenes.from_disk(folder, transform=transform)
    if tuple(dataset.size) != tuple(size):
        raise ConfigError(f"the toy dataset in {folder} is {dataset.size[0]}x{dataset.size[1]} but "
                          f"the working size is {tuple(size)}; set data.size (or data.target_size) to match")
    return dataset
