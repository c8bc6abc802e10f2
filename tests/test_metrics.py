"""Tests of the tasks' meters and densemtl_lab.metrics: hand-computed values, numpy brute force, batch-split invariance,
merging, the reference quirks, delta_m and the baselines file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from densemtl_lab.losses import LabelError
from densemtl_lab.metrics import (
    BASELINES_FILE, BaselinesFileError, MissingBaselineError, MultiTaskMetrics, NonFinitePredictionError,
    delta_m, delta_m_per_task, load_baselines, save_baseline,
)
from densemtl_lab.tasks import IGNORE_INDEX, TASKS, decode_depth, encode_depth
from densemtl_lab.tasks.depth import DepthMeter
from densemtl_lab.tasks.edges import EdgesMeter
from densemtl_lab.tasks.normals import NormalsMeter
from densemtl_lab.tasks.semseg import SemsegMeter

NUM_CLASSES = 5
ODS_TOL = 0.075  # x diagonal 20 of a 12 x 16 image = a 1.5 px matching radius


def _one_hot_logits(ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits [B, C, H, W] whose argmax is `ids` [B, H, W]."""
    return F.one_hot(ids, num_classes).permute(0, 3, 1, 2).float()


def _edge_logits(prob: torch.Tensor) -> torch.Tensor:
    """2-class logits [B, 2, H, W] whose softmax edge probability is `prob` [B, 1, H, W]."""
    return torch.cat([torch.zeros_like(prob), torch.logit(prob.double()).float()], dim=1)


# --- hand-computed values ------------------------------------------------------------------------

def test_semseg_by_hand():
    # (label, prediction) per pixel: (0,0) (0,1) (1,1) / (1,1) (2,0) (ignored,2)
    label = torch.tensor([[[0, 0, 1], [1, 2, IGNORE_INDEX]]])
    pred = _one_hot_logits(torch.tensor([[[0, 1, 1], [1, 0, 2]]]), 4)
    # IoU0 = 1 / (2 + 2 - 1), IoU1 = 2 / (2 + 3 - 2), IoU2 = 0 / 1; class 3 absent from both: skipped.
    meter = SemsegMeter(num_classes=4)
    meter.update(pred, label)
    assert meter.compute() == pytest.approx({"mIoU": 100 / 3, "pixel_acc": 60.0})
    assert meter.per_class_iou()[3] != meter.per_class_iou()[3]  # NaN
    restricted = SemsegMeter(num_classes=4, class_ids=(0, 1))
    restricted.update(pred, label)
    assert restricted.compute()["mIoU"] == pytest.approx(50.0)


def test_depth_by_hand():
    # valid: 2 m (pred 2.4) and 4 m (pred 4); 0 m is invalid and 90 m is out of range.
    gt = torch.tensor([2.0, 4.0, 0.0, 90.0]).reshape(1, 1, 1, 4)
    pred = encode_depth(torch.tensor([2.4, 4.0, 1.0, 1.0]).reshape(1, 1, 1, 4))
    meter = DepthMeter()
    meter.update(pred, gt)
    expected = {
        "abs_rel": (0.4 / 2) / 2, "sq_rel": (0.16 / 2) / 2, "rmse": math.sqrt(0.16 / 2),
        "rmse_log": math.sqrt(math.log(1.2) ** 2 / 2), "delta1": 100.0, "delta2": 100.0, "delta3": 100.0,
    }
    assert meter.compute() == pytest.approx(expected, rel=1e-5)


def test_depth_reference_quirks_by_hand():
    # image A: one valid pixel, z 2.99 m predicted 3.39 m; image B: three exact pixels.
    gt = torch.tensor([[2.99, 0.0, 0.0], [5.0, 6.0, 7.0]]).reshape(2, 1, 1, 3)
    pred = encode_depth(torch.tensor([[3.39, 1.0, 1.0], [5.0, 6.0, 7.0]]).reshape(2, 1, 1, 3))
    quirky, standard = DepthMeter(reference_quirks=True), DepthMeter()
    quirky.update(pred, gt)
    standard.update(pred, gt)
    # quirk: depths shifted by -0.99 m (A: 2.4 vs 2.0), per-image means: AbsRel (0.2 + 0) / 2,
    # RMSE sqrt((0.16 + 0) / 2). Standard: pooled over 4 pixels, unshifted.
    assert quirky.compute()["abs_rel"] == pytest.approx(0.1, rel=1e-4)
    assert quirky.compute()["rmse"] == pytest.approx(math.sqrt(0.08), rel=1e-4)
    assert standard.compute()["abs_rel"] == pytest.approx(0.4 / 2.99 / 4, rel=1e-4)
    assert standard.compute()["rmse"] == pytest.approx(math.sqrt(0.16 / 4), rel=1e-4)


def test_depth_reference_quirk_takes_negative_codes_to_the_minimum_depth():
    """The reference converts 655.36 / d - 1 on the raw code and then clamps: a negative output is 1e-3 m."""
    codes = torch.tensor([-5.0, -1e-3, 0.0, 655.36 / 11.0])
    assert decode_depth(codes, reference_quirk=True).tolist() == pytest.approx([1e-3, 1e-3, 80.0, 10.0])
    assert decode_depth(codes).tolist()[:3] == [80.0, 80.0, 80.0]  # ours: codes below 1e-6 are the far end


def test_normals_by_hand():
    # angles 0, 90, 45 degrees; the fourth pixel has no label and is skipped.
    pred = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0], [0, 0, 1.0]]).T.reshape(1, 3, 1, 4)
    label = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0], [0, 0, 0]]).T.reshape(1, 3, 1, 4)
    meter = NormalsMeter()
    meter.update(pred, label)
    result = meter.compute()
    assert result["mean_angle"] == pytest.approx(45.0, rel=1e-5)
    assert result["median_angle"] == pytest.approx(45.0, abs=0.01)  # a 0.01-degree histogram bin
    assert result["rmse_angle"] == pytest.approx(math.sqrt((0 + 90**2 + 45**2) / 3), rel=1e-5)
    assert [result[f"within_{t}"] for t in ("11.25", "22.5", "30")] == pytest.approx([100 / 3] * 3)


def test_normals_median_of_an_even_count_averages_the_middle_pair():
    # angles 10 and 50 degrees: the median is 30 (numpy's convention), not the lower 10.
    angles = torch.deg2rad(torch.tensor([10.0, 50.0]))
    pred = torch.stack([angles.cos(), angles.sin(), torch.zeros(2)]).reshape(1, 3, 1, 2)
    label = torch.tensor([1.0, 0, 0]).reshape(1, 3, 1, 1).expand(1, 3, 1, 2)
    meter = NormalsMeter()
    meter.update(pred, label)
    assert meter.compute()["median_angle"] == pytest.approx(30.0, abs=0.01)


def test_edges_f1_by_hand():
    # label 1 1 0 0 0, prediction 1 0 1 0 0: tp 1, fn 1, fp 1, tn 2.
    label = torch.tensor([1.0, 1, 0, 0, 0]).reshape(1, 1, 1, 5)
    pred = _one_hot_logits(torch.tensor([[[1, 0, 1, 0, 0]]]), 2)
    standard, quirky = EdgesMeter(), EdgesMeter(reference_quirks=True)
    standard.update(pred, label)
    quirky.update(pred, label)
    mean_f1 = 100 * (2 / 4 + 4 / 6) / 2  # edge F1 2tp/(2tp+fp+fn) and background F1
    assert standard.compute()["f1"] == pytest.approx(50.0)
    assert standard.compute()["mean_f1"] == pytest.approx(mean_f1)
    assert quirky.compute()["f1"] == pytest.approx(mean_f1)


@pytest.mark.parametrize(("tolerance", "expected"), [(0.15, 100.0), (0.0, 100 * 2 * (1 / 25) / (1 + 1 / 25))])
def test_ods_f_matches_within_the_tolerance(tolerance, expected):
    # one label edge at (2, 2); probability 0.95 at (2, 3), 0.25 elsewhere.
    # radius 0.15 * diagonal 7.07 = 1.06 px: at thresholds in (0.25, 0.95] the one prediction is a
    # neighbour -> P = R = 1. Radius 0: only the threshold <= 0.25 (everything predicted) matches:
    # P = 1/25, R = 1.
    label = torch.zeros(1, 1, 5, 5)
    label[0, 0, 2, 2] = 1
    prob = torch.full((1, 1, 5, 5), 0.25)
    prob[0, 0, 2, 3] = 0.95
    meter = EdgesMeter(ods_tolerance=tolerance)
    meter.update(_edge_logits(prob), label)
    assert meter.compute()["ods_f"] == pytest.approx(expected, rel=1e-6)


# --- random data: brute force and batch-split invariance -----------------------------------------

N_IMAGES, HEIGHT, WIDTH = 10, 12, 16


@pytest.fixture(scope="module")
def data() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Raw outputs and labels of 10 random 12 x 16 images, with invalid and ignored pixels."""
    g = torch.Generator().manual_seed(0)
    shape = (N_IMAGES, 1, HEIGHT, WIDTH)
    semseg = torch.randint(0, NUM_CLASSES, (N_IMAGES, HEIGHT, WIDTH), generator=g)
    semseg[torch.rand(semseg.shape, generator=g) < 0.1] = IGNORE_INDEX
    depth = torch.rand(shape, generator=g) * 100  # some beyond 80 m
    depth[torch.rand(shape, generator=g) < 0.1] = 0
    normals = F.normalize(torch.randn(N_IMAGES, 3, HEIGHT, WIDTH, generator=g), dim=1)
    normals = normals * (torch.rand(shape, generator=g) > 0.1)
    labels = {
        "semseg": semseg, "depth": depth, "normals": normals,
        "edges": (torch.rand(shape, generator=g) < 0.2).float(),
    }
    outputs = {
        "semseg": torch.randn(N_IMAGES, NUM_CLASSES, HEIGHT, WIDTH, generator=g),
        "depth": encode_depth(torch.rand(shape, generator=g) * 90 + 0.5),
        "normals": labels["normals"] + torch.randn(N_IMAGES, 3, HEIGHT, WIDTH, generator=g) * 0.5,
        "edges": torch.randn(N_IMAGES, 2, HEIGHT, WIDTH, generator=g),
    }
    return outputs, labels


def _brute_semseg(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    ids, keep = pred.argmax(1), label != IGNORE_INDEX
    ious = []
    for c in range(NUM_CLASSES):
        inter = np.sum((ids == c) & (label == c) & keep)
        union = np.sum(((ids == c) | (label == c)) & keep)
        if union:
            ious.append(inter / union)
    return {"mIoU": 100 * np.mean(ious), "pixel_acc": 100 * np.mean(ids[keep] == label[keep])}


def _brute_depth(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    p = np.clip((65536.0 / pred.astype(np.float64) - 1) / 100, 1e-3, 80)
    keep = (gt > 1e-3) & (gt < 80)
    p, g = p[keep], gt[keep].astype(np.float64)
    ratio = np.maximum(p / g, g / p)
    return {
        "abs_rel": np.mean(np.abs(p - g) / g), "sq_rel": np.mean((p - g) ** 2 / g),
        "rmse": np.sqrt(np.mean((p - g) ** 2)), "rmse_log": np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2)),
        **{f"delta{k}": 100 * np.mean(ratio < 1.25**k) for k in (1, 2, 3)},
    }


def _brute_normals(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    keep = np.any(gt != 0, axis=1)
    p = pred / np.linalg.norm(pred, axis=1, keepdims=True)
    cosine = np.clip(np.sum(p * gt, axis=1), -1, 1)
    angles = np.degrees(np.arccos(cosine))[keep]
    return {
        "mean_angle": angles.mean(), "median_angle": np.median(angles),
        "rmse_angle": np.sqrt(np.mean(angles**2)),
        **{f"within_{t:g}": 100 * np.mean(angles < t) for t in (11.25, 22.5, 30.0)},
    }


def _brute_edges(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    gt = gt[:, 0] > 0.5
    decision = pred.argmax(1) == 1
    tp, fp, fn = np.sum(decision & gt), np.sum(decision & ~gt), np.sum(~decision & gt)
    tn = decision.size - tp - fp - fn
    f1, f1_bg = 2 * tp / (2 * tp + fp + fn), 2 * tn / (2 * tn + fp + fn)
    prob = np.exp(pred[:, 1]) / np.exp(pred).sum(1)
    rows, cols = np.indices(gt.shape[1:]).reshape(2, -1)
    near = np.hypot(rows[:, None] - rows[None], cols[:, None] - cols[None]) <= ODS_TOL * math.hypot(*gt.shape[1:])
    best = 0.0
    for t in np.arange(1, 100) / 100:
        counts = np.zeros(4)  # pred matched, pred total, gt matched, gt total
        for image_prob, image_gt in zip(prob.reshape(len(prob), -1), gt.reshape(len(gt), -1)):
            predicted = image_prob >= t
            counts += [
                np.sum(predicted & near[:, image_gt].any(1)), predicted.sum(),
                np.sum(near[image_gt][:, predicted].any(1)), image_gt.sum(),
            ]
        precision = counts[0] / max(counts[1], 1)
        recall = counts[2] / counts[3]
        if precision + recall > 0:
            best = max(best, 2 * precision * recall / (precision + recall))
    return {"f1": 100 * f1, "mean_f1": 50 * (f1 + f1_bg), "ods_f": 100 * best}


_BRUTE = {"semseg": _brute_semseg, "depth": _brute_depth, "normals": _brute_normals, "edges": _brute_edges}
_TOLERANCE = {"semseg": 1e-9, "depth": 1e-5, "normals": 1e-5, "edges": 1e-9}


def _meter(task: str, reference_quirks: bool = False):
    return MultiTaskMetrics(
        task, NUM_CLASSES, reference_quirks=reference_quirks, ods_tolerance=ODS_TOL
    ).meters[task]


@pytest.mark.parametrize("task", list(_BRUTE))
def test_meters_match_numpy_brute_force(data, task):
    outputs, labels = data
    meter = _meter(task)
    meter.update(outputs[task], labels[task])
    result = meter.compute()
    expected = _BRUTE[task](outputs[task].numpy(), labels[task].numpy())
    assert set(result) == {m.name for m in TASKS[task].metrics}
    if task == "normals":  # histogram median: exact to half a 0.01-degree bin
        assert result.pop("median_angle") == pytest.approx(expected.pop("median_angle"), abs=0.005 + 1e-4)
    assert result == pytest.approx(expected, rel=_TOLERANCE[task])


@pytest.mark.parametrize("reference_quirks", [False, True])
@pytest.mark.parametrize("task", list(_BRUTE))
@pytest.mark.parametrize("num_batches", [2, 5])
def test_any_batch_split_gives_the_same_result(data, task, reference_quirks, num_batches):
    outputs, labels = data
    whole, split = _meter(task, reference_quirks), _meter(task, reference_quirks)
    whole.update(outputs[task], labels[task])
    for pred, label in zip(outputs[task].chunk(num_batches), labels[task].chunk(num_batches)):
        split.update(pred, label)
    assert split.compute() == pytest.approx(whole.compute(), rel=1e-6)


@pytest.mark.parametrize("task", list(_BRUTE))
def test_merge_and_summed_state_tensors_equal_one_pass(data, task):
    outputs, labels = data
    whole, first, second, reduced = (_meter(task) for _ in range(4))
    whole.update(outputs[task], labels[task])
    first.update(outputs[task][:4], labels[task][:4])
    second.update(outputs[task][4:], labels[task][4:])
    for key, value in reduced.state_tensors().items():  # what an all-reduce with SUM does
        value += first.state_tensors()[key] + second.state_tensors()[key]
    first.merge(second)
    assert first.compute() == pytest.approx(whole.compute(), rel=1e-9)
    assert reduced.compute() == pytest.approx(whole.compute(), rel=1e-9)


def _reference_normals(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """The reference's Normals._metrics per image [3, H, W] (norms over dim 1), averaged over images."""
    rows = []
    for p, g in zip(pred, gt / np.maximum(np.linalg.norm(gt, axis=1, keepdims=True), 1e-12)):
        error = np.degrees(2 * np.arctan2(np.linalg.norm(p - g, axis=1), np.linalg.norm(p + g, axis=1)))
        lower_median = np.sort(error.ravel())[(error.size - 1) // 2]  # torch.median
        rows.append([error.mean(), lower_median, np.mean(error**2), *(np.mean(error < t) for t in (11.25, 22.5, 30))])
    mean = np.mean(rows, axis=0)
    return {
        "mean_angle": mean[0], "median_angle": mean[1], "rmse_angle": math.sqrt(mean[2]),
        "within_11.25": 100 * mean[3], "within_22.5": 100 * mean[4], "within_30": 100 * mean[5],
    }


def test_normals_reference_quirks_match_the_reference_formula(data):
    outputs, labels = data
    meter = _meter("normals", reference_quirks=True)
    meter.update(outputs["normals"], labels["normals"])
    expected = _reference_normals(outputs["normals"].numpy().astype(np.float64), labels["normals"].numpy())
    assert meter.compute() == pytest.approx(expected, rel=1e-4)


def test_normals_reference_quirks_on_nyuv2_normalise_the_prediction_as_its_gt_normals_loss(data):
    """loss/gt_normals.py evaluates F.normalize(pred); loss/normals.py (outdoor) does not."""
    outputs, labels = data
    pred = outputs["normals"] * 3.0  # not unit length: the two paths must differ
    nyu = MultiTaskMetrics("N", NUM_CLASSES, reference_quirks=True, dataset="nyuv2")
    outdoor = MultiTaskMetrics("N", NUM_CLASSES, reference_quirks=True, dataset="cityscapes")
    for metrics in (nyu, outdoor):
        metrics.update({"normals": pred}, labels)
    unit = pred.double() / pred.double().norm(dim=1, keepdim=True)
    assert nyu.compute()["normals"] == pytest.approx(_reference_normals(unit.numpy(), labels["normals"].numpy()),
                                                     rel=1e-4)
    assert outdoor.compute()["normals"] == pytest.approx(
        _reference_normals(pred.numpy().astype(np.float64), labels["normals"].numpy()), rel=1e-4)
    assert nyu.compute()["normals"]["mean_angle"] != pytest.approx(outdoor.compute()["normals"]["mean_angle"])


# --- the multi-task wrapper and bad input --------------------------------------------------------

def test_multitask_metrics_reads_scale_zero_and_names_metrics_as_the_registry(data):
    outputs, labels = data
    metrics = MultiTaskMetrics("SDNE", NUM_CLASSES, ods_tolerance=ODS_TOL)
    metrics.update({task: {0: pred, 1: pred[..., ::2, ::2]} for task, pred in outputs.items()}, labels)
    result = metrics.compute()
    assert {t: set(r) for t, r in result.items()} == {t: {m.name for m in TASKS[t].metrics} for t in TASKS}
    assert result["semseg"] == pytest.approx(_brute_semseg(outputs["semseg"].numpy(), labels["semseg"].numpy()))
    metrics.reset()
    assert math.isnan(metrics.compute()["depth"]["rmse"])


@pytest.mark.parametrize("task", list(_BRUTE))
def test_nan_prediction_raises_naming_the_task(data, task):
    outputs, labels = data
    bad = outputs[task].clone()
    bad[0, 0, 0, 0] = float("nan")
    metrics = MultiTaskMetrics(task, NUM_CLASSES)
    with pytest.raises(NonFinitePredictionError, match=f"task '{task}'"):
        metrics.update({task: bad}, labels)


def test_bad_labels_raise(data):
    outputs, labels = data
    with pytest.raises(LabelError, match=r"label 'depth' must be floating \[B,1,H,W\], got int64"):
        DepthMeter().update(outputs["depth"], labels["depth"].long())
    out_of_range = labels["semseg"].clone()
    out_of_range[0, 0, 0] = NUM_CLASSES
    with pytest.raises(LabelError, match="class id 5 outside"):
        SemsegMeter(NUM_CLASSES).update(outputs["semseg"], out_of_range)


# --- delta_m and the baselines file --------------------------------------------------------------

def test_delta_m_by_hand():
    results = {"semseg": {"mIoU": 50.0, "pixel_acc": 90.0}, "depth": {"rmse": 2.0}}
    baselines = {"semseg": 40.0, "depth": 2.5}
    # semseg: +(50 - 40) / 40 = +25 %; depth (lower is better): -(2 - 2.5) / 2.5 = +20 %
    assert delta_m_per_task(results, baselines) == pytest.approx({"semseg": 25.0, "depth": 20.0})
    assert delta_m(results, baselines) == pytest.approx(22.5)
    assert delta_m(results, baselines, tasks="D") == pytest.approx(20.0)


def test_shipped_baselines_file_is_versioned_and_empty():
    data = json.loads(BASELINES_FILE.read_text())
    assert data["version"] == 1 and data["settings"] == {}


def test_save_then_load_baselines_and_missing_task(tmp_path):
    path = tmp_path / "baselines.json"
    provenance = {"seeds": [0, 1], "commit": "abc1234", "config": {"profile": "quick"}}
    save_baseline(path, "toy-quick-SD", "semseg", {"mIoU": 40.0, "pixel_acc": 80.0}, provenance)
    save_baseline(path, "toy-quick-SD", "semseg", {"mIoU": 42.0, "pixel_acc": 80.0}, provenance)
    assert [p.name for p in tmp_path.iterdir()] == ["baselines.json"]  # no temporary file left
    stored = json.loads(path.read_text())["settings"]["toy-quick-SD"]["semseg"]
    assert stored == {"metric": "mIoU", "value": 42.0, **provenance}
    baselines = load_baselines(path, "toy-quick-SD")
    assert baselines == {"semseg": 42.0}
    results = {"semseg": {"mIoU": 42.0}, "depth": {"rmse": 1.0}}
    with pytest.raises(MissingBaselineError, match=f"task 'depth' in setting 'toy-quick-SD' of {path}"):
        delta_m(results, baselines)


def test_baseline_file_errors(tmp_path):
    path = tmp_path / "baselines.json"
    with pytest.raises(BaselinesFileError, match="does not exist"):
        load_baselines(path, "toy-quick-SD")
    with pytest.raises(ValueError, match=r"provenance lacks \['commit'\]"):
        save_baseline(path, "toy-quick-SD", "depth", {"rmse": 1.0}, {"seeds": [0], "config": "x"})
    with pytest.raises(ValueError, match="finite 'rmse'"):
        save_baseline(path, "toy-quick-SD", "depth", {"abs_rel": 1.0}, {"seeds": [0], "commit": "c", "config": "x"})
    path.write_text(json.dumps({"version": 99, "settings": {}}))
    with pytest.raises(BaselinesFileError, match="version 99"):
        load_baselines(path, "toy-quick-SD")
    path.write_text(json.dumps({"version": 1, "settings": {}}))
    with pytest.raises(BaselinesFileError, match="no setting 'toy-smoke-SD'"):
        load_baselines(path, "toy-smoke-SD")
