"""Configs: profiles, dict/YAML round trips, dotted overrides and validation errors."""

from __future__ import annotations

import dataclasses
import json

import pytest

from densemtl_lab.config import (
    PROFILES, ConfigError, ExperimentConfig, TrainConfig, config_differences, get_profile, load_config, override,
    parse_value,
)
from densemtl_lab.models import model_options

EXPECTED_PROFILES = ("smoke", "quick", "course", "full", "paper-synthia", "paper-vkitti2", "paper-cityscapes",
                     "paper-nyuv2", "paper-cityscapes-sde", "paper-synthia2cityscapes", "paper-vkitti22cityscapes")


def test_every_named_profile_exists():
    assert tuple(PROFILES) == EXPECTED_PROFILES


@pytest.mark.parametrize("name", EXPECTED_PROFILES)
def test_profile_round_trips_through_json(name):
    config = PROFILES[name]
    text = json.dumps(config.to_dict())
    assert ExperimentConfig.from_dict(json.loads(text)) == config
    assert config.profile == name


def test_smoke_profile_matches_the_issue():
    config = get_profile("smoke")
    assert (config.data.size, config.data.train_length, config.data.val_length) == ((32, 64), 16, 4)
    assert config.model.decoder_widths == (8, 16, 16, 32, 32) and config.model.backbone == "resnet18"
    assert (config.train.batch_size, config.train.steps, config.train.eval_every) == (2, 4, 4)
    assert config.train.amp == "off"  # the tests' numbers must not depend on the CPU's bf16 support


def test_quick_profile_is_the_default_lesson_config():
    config = get_profile("quick")
    # The dataclass defaults but for precision (float32 even where auto would pick bf16) and memory format
    # (channels_last on the task side only); config.py says why.
    assert config == dataclasses.replace(ExperimentConfig(profile="quick"),
                                         train=TrainConfig(amp="off", channels_last="decoders"))
    assert get_profile("course").train.channels_last == "decoders"
    assert ExperimentConfig().train.amp == "auto"
    assert (config.data.size, config.model.backbone, config.model.decoder_widths) == (
        (64, 128), "resnet18", (16, 32, 32, 64, 64))
    assert (config.train.batch_size, config.train.steps, config.data.val_length, config.optim.name) == (
        4, 80, 64, "adam")
    assert (config.optim.lr, config.optim.backbone_lr, config.model.weights) == (1e-3, 1e-3, None)


@pytest.mark.parametrize("name, size, classes, lr, backbone_lr", [
    ("paper-synthia", (512, 1024), 16, 3e-4, 2e-4),
    ("paper-vkitti2", (320, 1024), 14, 3e-4, 2e-4),
    ("paper-cityscapes", (512, 1024), 16, 1e-4, 1e-5),
    ("paper-nyuv2", (448, 576), 40, 3e-4, 2e-4),
])
def test_paper_profiles_take_the_reference_settings(name, size, classes, lr, backbone_lr):
    config = get_profile(name)
    assert (config.data.size, config.data.classes, config.data.hflip) == (size, classes, True)
    assert (config.optim.lr, config.optim.backbone_lr, config.optim.betas) == (lr, backbone_lr, (0.9, 0.98))
    assert (config.optim.scheduler_step, config.optim.scheduler_gamma, config.optim.clip_grad_norm) == (30000, 0.1, 10.0)
    assert (config.train.steps, config.train.batch_size, config.train.seed) == (40000, 2, 42)
    assert (config.model.backbone, config.model.decoder_widths) == ("resnet101", (64, 128, 128, 256, 256))


@pytest.mark.parametrize("name, source, classes", [
    ("paper-synthia2cityscapes", "synthia", 16), ("paper-vkitti22cityscapes", "vkitti2", 8)])
def test_adaptation_profiles_take_the_reference_settings(name, source, classes):
    config = get_profile(name)
    assert (config.data.dataset, config.data.target_dataset, config.data.classes) == (source, "cityscapes", classes)
    assert config.model.tasks == "SD" and config.train.loss_weights is None  # SD default: 50 / 1
    assert (config.optim.lr, config.optim.backbone_lr) == (2.5e-4, 1.5e-5)
    assert config.optim.clip_grad_norm is None and config.optim.scheduler_step is None
    assert config.train.steps == 90000
    assert config.data.train_split == "all" and config.data.target_size == (512, 1024)  # configs/da/*: src_split all


def test_the_self_supervised_depth_profile_takes_the_reference_settings():
    config = get_profile("paper-cityscapes-sde")  # configs/cityscapes/monodepth/resnet101_ours_SD.yml
    assert (config.data.dataset, config.data.size, config.data.crop, config.data.classes) == (
        "cityscapes", (512, 1024), (512, 512), 16)
    assert config.data.sequence and config.data.hflip and config.model.tasks == "SD"
    assert (config.train.depth_loss, config.model.depth_output, config.model.pose_source) == (
        "photometric", "disparity", "network")
    assert (config.optim.lr, config.optim.backbone_lr, config.optim.pose_lr, config.optim.betas) == (
        5e-5, 1e-5, 1e-6, (0.9, 0.999))
    assert (config.train.steps, config.train.batch_size, config.optim.scheduler_step) == (40000, 2, 30000)


def test_unknown_profile_lists_the_valid_names():
    with pytest.raises(ConfigError, match="unknown profile 'quik'; valid profiles: smoke, quick, course, full"):
        get_profile("quik")


def test_get_profile_keywords_reach_their_section():
    config = get_profile("smoke", steps=10, tasks="ds", model={"name": "mtl"}, lr=5e-4)
    assert (config.train.steps, config.model.tasks, config.model.name, config.optim.lr) == (10, "SD", "mtl", 5e-4)
    assert PROFILES["smoke"].train.steps == 4  # the profile itself is untouched


@pytest.mark.parametrize("keyword, message", [("name", "ambiguous"), ("stepz", "unknown config key 'stepz'")])
def test_get_profile_rejects_unclear_keywords(keyword, message):
    with pytest.raises(ConfigError, match=message):
        get_profile("smoke", **{keyword: 1})


@pytest.mark.parametrize("assignment, section, key, value", [
    ("train.steps=10", "train", "steps", 10),
    ("optim.lr=1e-3", "optim", "lr", 1e-3),
    ("optim.lr=1", "optim", "lr", 1.0),
    ("data.size=[64, 128]", "data", "size", (64, 128)),
    ("train.best_metric=null", "train", "best_metric", None),
    ("data.root=2024", "data", "root", "2024"),
    ("data.root=/data/city scapes", "data", "root", "/data/city scapes"),
    ("model.tasks=NS", "model", "tasks", "SN"),
    ("data.hflip=True", "data", "hflip", True),
    ("adapt.method=none", "adapt", "method", "none"),  # -p reads none as null; stored as "none"
    ("train.loss_weights={\"semseg\": 2, \"depth\": 1, \"normals\": 3}", "train", "loss_weights",
     {"semseg": 2.0, "depth": 1.0, "normals": 3.0}),
])
def test_override_parses_literals_and_coerces_to_the_field_type(assignment, section, key, value):
    config = override(get_profile("smoke"), assignment)
    assert getattr(getattr(config, section), key) == value
    assert type(getattr(getattr(config, section), key)) is type(value)


@pytest.mark.parametrize("assignment, message", [
    ("steps=10", "expected SECTION.KEY=VALUE"),
    ("train.steps", "expected SECTION.KEY=VALUE"),
    ("train.stpes=10", "unknown config key 'train.stpes'; did you mean 'steps'"),
    ("train.steps=ten", "train.steps='ten' must be of type int"),
    ("train.steps=true", "train.steps=True must be of type int"),
    ("data.size=[64]", "data.size=.* needs 2 values"),
    ("data.size=[60, 128]", "divisible by 16"),
    ("model.name=resnet", "model.name='resnet' is unknown; use one of stl, stl-deeplab"),
    ("model.tasks=SX", "unknown task 'X'"),
    ("train.best_metric=depth/mIoU", "train.best_metric='depth/mIoU'"),
    ("train.best_metric=delta_m", "needs train.baseline_setting"),
    ("train.loss_weights={\"semseg\": 1}", "one weight per task"),
    ("data.train_split=test", "data.train_split='test' must be 'train' or 'all'"),
    ("data.train_split=all", "data.train_split='all' needs a dataset with a seeded train/val split"),
    ("data.target_size=[48, 100]", "data.target_size=.* divisible by 16"),
    ("optim.alpha_lr=0", r"optim.alpha_lr=0.0 must be > 0 or null \(null: optim.lr\)"),
])
def test_override_errors_name_the_key(assignment, message):
    with pytest.raises(ValueError, match=message):
        override(get_profile("smoke"), assignment)


def test_parse_value_never_evaluates():
    assert parse_value("__import__('os').getcwd()") == "__import__('os').getcwd()"
    assert parse_value("[1, 2]") == [1, 2] and parse_value("None") is None and parse_value("1e-4") == 1e-4


def test_from_dict_rejects_unknown_keys_and_sections():
    values = get_profile("smoke").to_dict()
    values["train"]["warmup"] = 5
    with pytest.raises(ConfigError, match="unknown config key 'train.warmup'"):
        ExperimentConfig.from_dict(values)
    with pytest.raises(ConfigError, match="unknown config key 'trian'"):
        ExperimentConfig.from_dict({"trian": {}})


def test_load_config_starts_from_the_named_profile(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("profile: smoke\nmodel: {name: mtl, tasks: SD}\ntrain:\n  steps: 7\n")
    config = load_config(path)
    assert (config.profile, config.model.name, config.model.tasks, config.train.steps) == ("smoke", "mtl", "SD", 7)
    assert config.data.size == (32, 64)


@pytest.mark.parametrize("text, message", [
    ("train: {stepz: 1}\n", "exp.yaml: unknown config key 'train.stepz'"),
    ("train: [1, 2\n", "exp.yaml is not valid YAML"),
    ("- 1\n", "must hold a mapping"),
    ("profile: nope\n", "unknown profile 'nope'"),
    ("!!python/object/apply:os.getcwd []\n", "is not valid YAML"),
])
def test_load_config_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_load_config_of_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path / "absent.yaml")


@pytest.mark.parametrize("name", ["densemtl", "padnet", "stl-deeplab"])
def test_build_options_pass_only_what_the_model_takes(name):
    tasks = "S" if name.startswith("stl") else "SD"
    options = override(get_profile("smoke"), f"model.name={name}", f"model.tasks={tasks}").model.build_options()
    assert set(options) == {"backbone", "weights", "decoder_widths", "depth_output", *model_options(name)}


def test_config_differences_lists_dotted_keys():
    base = get_profile("smoke")
    changed = override(base, "train.steps=9", "model.tasks=SD")
    assert config_differences(base, changed) == ["model.tasks", "train.steps"]


def test_best_metric_defaults_to_the_first_tasks_main_metric():
    assert get_profile("smoke").best_metric == "semseg/mIoU"
    assert get_profile("smoke", tasks="DN").best_metric == "depth/rmse"


def test_course_profile_is_the_quick_model_trained_longer_on_the_target_look():
    course, quick = get_profile("course"), get_profile("quick")
    assert config_differences(quick, course) == ["data.severity", "data.domain", "train.steps", "train.eval_every",
                                                 "train.checkpoint_every", "train.amp"]
    assert (course.data.domain, course.data.severity, course.train.steps, course.train.amp) == (
        "target", 1.0, 1200, "bf16")
    assert course.optim.alpha_lr is None  # the method as published: no lesson-only alpha rate


@pytest.mark.parametrize("value, expected", [("true", True), ("false", False), ("decoders", "decoders")])
def test_channels_last_takes_true_false_or_decoders(value, expected):
    assert override(get_profile("smoke"), f"train.channels_last={value}").train.channels_last == expected


@pytest.mark.parametrize("value", ["encoder", "1", "[true]"])
def test_another_channels_last_value_names_the_three(value):
    with pytest.raises(ConfigError, match="train.channels_last"):
        override(get_profile("smoke"), f"train.channels_last={value}")
