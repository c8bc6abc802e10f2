"""Attention diagnostics: alpha, row entropy and test-time switches, on known answers."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn

from densemtl_lab.cli import main
from densemtl_lab.config import get_profile
from densemtl_lab.data.toy import ToyScenes
from densemtl_lab.diagnostics import (
    DiagnosticsError, ablation_costs, alpha_magnitudes, attention_entropy, switched_off,
)
from densemtl_lab.models import build_model
from densemtl_lab.models.decoder import DecoderConfig
from densemtl_lab.models.densemtl import DenseMTL
from densemtl_lab.models.xtam import XTAMConfig

TINY = DecoderConfig((8, 16, 16, 32, 32))
PAIRS = {"semseg<-depth", "semseg<-normals", "depth<-semseg", "depth<-normals", "normals<-semseg",
         "normals<-depth"}


def _model(**xtam) -> DenseMTL:
    torch.manual_seed(0)
    return DenseMTL("SDN", num_classes=19, decoder=TINY, xtam=XTAMConfig(**xtam)).eval()


def _set(model: nn.Module, suffix: str, value: float) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(suffix):
                param.fill_(value)


def _same_outputs(a: dict, b: dict) -> bool:
    return all(torch.equal(a[task][scale], b[task][scale]) for task in a for scale in a[task])


def test_alpha_starts_closed_and_reads_back_what_is_set():
    model = _model()
    assert alpha_magnitudes(model) == dict.fromkeys(PAIRS, 0.0)
    _set(model, "alpha", -0.25)
    assert alpha_magnitudes(model) == dict.fromkeys(PAIRS, 0.25)
    assert set(alpha_magnitudes(_model(alpha=False)).values()) == {None}


def test_uniform_attention_has_entropy_1_and_a_pair_without_correlation_none():
    model = _model()
    _set(model, "correlation.query.0.weight", 0.0)  # every query the same: softmax over equal scores
    dataset = ToyScenes(3, (32, 64), seed=1)
    entropy = attention_entropy(model, dataset, batch_size=2)
    assert set(entropy) == PAIRS and all(value == pytest.approx(1.0, abs=1e-6) for value in entropy.values())
    trained_like = _model()
    _set(trained_like, "correlation.query.0.weight", 5.0)  # large scores: far from uniform
    _set(trained_like, "correlation.key.0.weight", 5.0)
    assert min(attention_entropy(trained_like, dataset, max_images=2).values()) < 0.9
    no_correlation = attention_entropy(_model(correlation=False), dataset, max_images=1)
    assert set(no_correlation.values()) == {None}


def test_switching_the_correlation_branch_off_is_alpha_0_and_is_undone_after():
    model = _model()
    _set(model, "alpha", 0.7)
    image = torch.rand(2, 3, 32, 64)
    with torch.no_grad():
        full = model(image)
        with switched_off(model, "correlation"):
            switched = model(image)
        after = model(image)
        _set(model, "alpha", 0.0)
        closed = model(image)
    assert _same_outputs(switched, closed) and _same_outputs(after, full) and not _same_outputs(full, closed)


def test_switching_the_exchange_off_leaves_the_features_as_they_were():
    model = _model()
    _set(model, "alpha", 0.7)
    silent = copy.deepcopy(model)
    _set(silent, "fuse.semseg.0.weight", 0.0)  # in "add" mode: f~ = f + ReLU(BN(0)) = f (eval, fresh BN)
    _set(silent, "fuse.depth.0.weight", 0.0)
    _set(silent, "fuse.normals.0.weight", 0.0)
    image = torch.rand(1, 3, 32, 64)
    with torch.no_grad():
        with switched_off(model, "exchange"):
            switched = model(image)
        assert _same_outputs(switched, silent(image)) and not _same_outputs(switched, model(image))


def test_models_without_an_exchange_and_unknown_switches_are_refused():
    with pytest.raises(DiagnosticsError, match="has no mTEB exchange"):
        alpha_magnitudes(build_model("mtl", "SD", num_classes=19, decoder_widths=(8, 16, 16, 32, 32)))
    with pytest.raises(DiagnosticsError, match="cannot switch off attention; choose from correlation"):
        with switched_off(_model(), "attention"):
            pass
    with pytest.raises(DiagnosticsError, match="no self-attention branch"):
        with switched_off(_model(self_attention=False), "self_attention"):
            pass


def test_ablation_costs_evaluate_each_present_part(tmp_path):
    config = get_profile("smoke", quiet=True, device="cpu")
    dataset = ToyScenes(2, (32, 64), seed=2)
    model = _model(self_attention=False)
    _set(model, "alpha", 0.5)
    costs = ablation_costs(model, dataset, config, torch.device("cpu"))
    assert list(costs) == ["full", "no correlation", "no exchange"]
    assert costs["no correlation"]["normals"] != costs["full"]["normals"]
    _set(model, "alpha", 0.0)  # a closed branch costs exactly nothing
    closed = ablation_costs(model, dataset, config, torch.device("cpu"), switches=("correlation",))
    assert closed["no correlation"] == closed["full"]


def test_diagnose_command_writes_every_figure(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--run-dir", str(run_dir), "--profile", "smoke", "--quiet", "--device", "cpu",
                 "--steps", "1"]) == 0
    checkpoint = run_dir / "checkpoints" / "best.pt"
    assert main(["diagnose", str(checkpoint), "--images", "2"]) == 0
    report = json.loads(checkpoint.with_suffix(".diagnostics.json").read_text())
    assert set(report["alpha"]) == PAIRS and set(report["entropy"]) == PAIRS
    assert list(report["metrics"]) == ["full", "no correlation", "no self_attention", "no exchange"]
    assert set(report["main_metric_change"]["no exchange"]) == {"semseg", "depth", "normals"}
    assert "Wrote" in capsys.readouterr().out
