"""Tests of the tasks' losses (`Task.loss`) against hand-computed values, and of densemtl_lab.losses: scale
averaging, the weighted total, loss options, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from densemtl_lab.losses import LabelError, MultiTaskLoss, PredictionError
from densemtl_lab.tasks import IGNORE_INDEX, TASK_ORDER, TASKS, decode_depth, encode_depth
from densemtl_lab.tasks.depth import metres_from_code

LN = math.log


def _logits(*pixels: tuple[float, float]) -> torch.Tensor:
    """Two-class logits [1, 2, 1, P] from one (class0, class1) pair per pixel."""
    return torch.tensor(pixels, dtype=torch.float32).T.reshape(1, 2, 1, len(pixels))


def test_semseg_cross_entropy_ignores_the_ignore_index():
    # pixel 0: logits (0, 0), label 1 -> -log(1/2); pixel 1: (ln 3, 0), label 0 -> -log(3/4);
    # pixel 2 is ignored whatever its logits.
    pred = _logits((0.0, 0.0), (LN(3), 0.0), (9.0, -9.0))
    label = torch.tensor([[[1, 0, IGNORE_INDEX]]])
    expected = (LN(2) + LN(4 / 3)) / 2
    assert TASKS["semseg"].loss(pred, label).item() == pytest.approx(expected, rel=1e-6)


def test_semseg_all_ignored_gives_zero_and_finite_gradient():
    pred = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = TASKS["semseg"].loss(pred, torch.full((1, 2, 2), IGNORE_INDEX))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(pred.grad).all()


def _depth_case(offsets: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Metres [1,1,1,4] (last pixel invalid) and a prediction = encode(z) + offsets."""
    depth = torch.tensor([10.0, 20.0, 5.0, 0.0]).reshape(1, 1, 1, 4)
    pred = (encode_depth(depth) + torch.tensor(offsets).reshape(1, 1, 1, 4)).requires_grad_()
    return pred, depth


def test_berhu_both_regimes_and_masked_pixels_count_as_zero():
    # e = |offset| * mask = [1, 10, 2, 0]; c = 0.2 * 10 = 2.
    # e=1 <= c -> 1; e=10 > c -> (100 + 4) / 4 = 26; e=2 == c -> 2 (L1 side); masked -> 0.
    # Mean over all 4 pixels: 29 / 4.
    pred, depth = _depth_case([1.0, -10.0, 2.0, 100.0])
    loss = TASKS["depth"].loss(pred, depth)
    assert loss.item() == pytest.approx(29 / 4, rel=1e-5)
    loss.backward()
    # c is detached: d/de (e^2 + c^2) / 2c = e / c = 5 -> 5 / 4 per pixel, sign of the offset.
    assert pred.grad.flatten().tolist() == pytest.approx([0.25, -1.25, 0.25, 0.0], rel=1e-5)


def test_berhu_guards_a_perfect_batch():
    pred, depth = _depth_case([0.0, 0.0, 0.0, 5.0])
    loss = TASKS["depth"].loss(pred, depth)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(pred.grad).all()


def test_l1_depth_in_metres_over_valid_pixels():
    depth = torch.tensor([10.0, 20.0, 0.0]).reshape(1, 1, 1, 3)
    pred = encode_depth(torch.tensor([12.0, 19.0, 7.0]).reshape(1, 1, 1, 3))
    # |12 - 10| and |19 - 20| over the 2 valid pixels.
    assert TASKS["depth"].loss(pred, depth, kind="l1").item() == pytest.approx(1.5, rel=1e-4)


def test_metres_from_code_matches_decode_and_keeps_gradients_out_of_range():
    code = torch.tensor([1.0, 65.47, 1e6], requires_grad=True)  # 655 m, 10 m, under 1 mm
    metres = metres_from_code(code)
    assert metres.tolist() == pytest.approx(decode_depth(code.detach()).tolist(), rel=1e-5)
    metres.sum().backward()
    assert (code.grad < 0).all()  # a larger code is always a nearer depth, even when clamped


def test_normals_one_minus_cosine_over_valid_pixels():
    # pixel 0: orthogonal -> 1; pixel 1: same direction, unnormalised -> 0; pixel 2: invalid label.
    pred = torch.tensor([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1.0]]).T.reshape(1, 3, 1, 3)
    label = torch.tensor([[0, 1.0, 0], [1.0, 0, 0], [0, 0, 0]]).T.reshape(1, 3, 1, 3)
    assert TASKS["normals"].loss(pred, label).item() == pytest.approx(0.5, rel=1e-6)


def test_edges_weighted_cross_entropy():
    # nll: pixel 0 (label 0, logits (ln 3, 0)) ln(4/3); pixels 1 and 2 (logits (0, 0)) ln 2.
    # torch's weighted mean: sum_i w_{y_i} nll_i / sum_i w_{y_i} with w = (0.05, 0.95).
    pred = _logits((LN(3), 0.0), (0.0, 0.0), (0.0, 0.0))
    label = torch.tensor([0.0, 1.0, 0.0]).reshape(1, 1, 1, 3)
    expected = (0.05 * LN(4 / 3) + 0.95 * LN(2) + 0.05 * LN(2)) / (0.05 + 0.95 + 0.05)
    assert TASKS["edges"].loss(pred, label).item() == pytest.approx(expected, rel=1e-6)


def test_predictions_are_resized_bilinearly_with_align_corners():
    torch.manual_seed(0)
    low = torch.randn(2, 4, 3, 3)
    label = torch.randint(0, 4, (2, 5, 5))
    aligned = F.interpolate(low, size=(5, 5), mode="bilinear", align_corners=True)
    unaligned = F.interpolate(low, size=(5, 5), mode="bilinear", align_corners=False)
    loss = TASKS["semseg"].loss(low, label).item()
    assert loss == pytest.approx(F.cross_entropy(aligned, label).item(), rel=1e-6)
    assert loss != pytest.approx(F.cross_entropy(unaligned, label).item(), rel=1e-6)


def _batch(size: int = 8, num_classes: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {
        "semseg": torch.randint(0, num_classes, (2, size, size)),
        "depth": torch.rand(2, 1, size, size) * 30,
        "normals": F.normalize(torch.randn(2, 3, size, size), dim=1),
        "edges": (torch.rand(2, 1, size, size) > 0.7).float(),
    }


def _outputs(size: int = 8, num_classes: int = 4) -> dict[str, dict[int, torch.Tensor]]:
    torch.manual_seed(2)
    channels = {"semseg": num_classes, "depth": 1, "normals": 3, "edges": 2}
    return {
        task: {s: (torch.randn(2, c, size >> s, size >> s) * 5).requires_grad_() for s in (0, 1)}
        for task, c in channels.items()
    }


def test_scale_average_of_a_perfect_and_an_orthogonal_normal_prediction():
    label = torch.zeros(1, 3, 4, 4)
    label[:, 2] = 1.0
    outputs = {"normals": {0: label.clone(), 1: torch.tensor([1.0, 0, 0]).reshape(1, 3, 1, 1).expand(1, 3, 2, 2)}}
    total, parts = MultiTaskLoss("normals")(outputs, {"normals": label})
    assert parts["normals"].item() == pytest.approx(0.5)  # mean(0, 1)
    assert total.item() == pytest.approx(0.5)  # a single task has weight 1


def test_total_is_the_weighted_sum_of_scale_means():
    outputs, batch = _outputs(), _batch()
    criterion = MultiTaskLoss("SDNE")
    total, parts = criterion(outputs, batch)
    weights = {"semseg": 100.0, "depth": 1.0, "normals": 100.0, "edges": 50.0}
    expected = 0.0
    for task, fn in ((task, TASKS[task].loss) for task in TASK_ORDER):
        mean = (fn(outputs[task][0], batch[task]) + fn(outputs[task][1], batch[task])) / 2
        assert parts[task].item() == pytest.approx(mean.item(), rel=1e-6)
        assert not parts[task].requires_grad
        expected += weights[task] * mean.item()
    assert total.item() == pytest.approx(expected, rel=1e-6)
    total.backward()
    assert all(outputs[t][s].grad is not None for t in outputs for s in (0, 1))


def test_l1_option_reaches_the_depth_part():
    outputs, batch = _outputs(), _batch()
    _, parts = MultiTaskLoss("D", loss_kinds={"depth": "l1"})({"depth": outputs["depth"]}, batch)
    expected = sum(TASKS["depth"].loss(outputs["depth"][s], batch["depth"], "l1") for s in (0, 1)) / 2
    assert parts["depth"].item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(
    ("task", "label", "message"),
    [
        ("semseg", torch.zeros(2, 1, 8, 8), "label 'semseg' must be int64 [B,H,W], got float32 [2,1,8,8]"),
        ("depth", torch.zeros(2, 1, 8, 8, dtype=torch.int64), "label 'depth' must be floating [B,1,H,W], got int64"),
        ("normals", torch.zeros(2, 1, 8, 8), "label 'normals' must be floating [B,3,H,W], got float32 [2,1,8,8]"),
        ("edges", torch.zeros(2, 8, 8), "label 'edges' must be floating [B,1,H,W], got float32 [2,8,8]"),
    ],
)
def test_wrong_label_shape_or_dtype_is_named(task, label, message):
    channels = {"semseg": 4, "depth": 1, "normals": 3, "edges": 2}[task]
    with pytest.raises(LabelError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TASKS[task].loss(torch.zeros(2, channels, 8, 8), label)


def test_wrong_prediction_channels_are_named():
    with pytest.raises(PredictionError, match="'normals'"):
        TASKS["normals"].loss(torch.zeros(2, 2, 8, 8), torch.zeros(2, 3, 8, 8))


def test_missing_label_and_bad_options_raise():
    outputs, batch = _outputs(), _batch()
    del batch["normals"]
    with pytest.raises(LabelError, match="batch has no label 'normals'"):
        MultiTaskLoss("SDN")(outputs, batch)
    with pytest.raises(ValueError, match="depth_loss='l2' is unknown"):
        MultiTaskLoss("SD", loss_kinds={"depth": "l2"})
