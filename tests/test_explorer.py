"""Tests for densemtl_lab.viz.explorer: the cache, the query mapping, the figures and the widget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.axes import Axes

from densemtl_lab.models import build_model
from densemtl_lab.viz.explorer import (
    AttentionCache,
    AttentionView,
    ExplorerError,
    QueryOutsideImageError,
    UnknownBranchError,
    UnknownPairError,
    attention_entropy,
    attention_explorer,
    branch_map,
    figure_png,
    load_caches,
    query_cell,
    query_points,
    render_attention,
    render_query_grid,
    save_caches,
    show_maps,
    show_pair_statistics,
)

H, W = 32, 64  # H/2 = 16 x 32; with ds = 4 the attention grid is 4 x 8, one cell = 8 x 8 pixels
GRID = (4, 8)
WIDTHS = (8, 16, 16, 32, 32)


def _model(**options):
    torch.manual_seed(0)
    return build_model("densemtl", "SDN", num_classes=5, decoder_widths=WIDTHS, **options)


@pytest.fixture(scope="module")
def cache() -> AttentionCache:
    torch.manual_seed(1)
    return AttentionCache.from_model(_model(), {"image": torch.rand(3, H, W), "name": "scene"})


def _hand_cache(attention: np.ndarray) -> AttentionCache:
    """A two-task cache whose every map is given by hand."""
    pairs = [("semseg", "depth"), ("depth", "semseg")]
    half = np.arange(16 * 32, dtype=np.float32).reshape(16, 32)
    return AttentionCache(
        name="hand", image=np.zeros((H, W, 3), np.float32), tasks=("semseg", "depth"), grid=GRID,
        attention={pair: attention for pair in pairs}, gate={pair: half / half.max() for pair in pairs},
        magnitude={pair: half for pair in pairs}, alpha={pair: 0.0 for pair in pairs},
        predictions={task: np.zeros((H, W, 3), np.uint8) for task in ("semseg", "depth")},
    )


def _branch_image(ax: Axes) -> np.ndarray:
    (image,) = [im for im in ax.get_images() if im.get_gid() == "branch-map"]
    return np.asarray(image.get_array())


def test_cache_holds_one_image_of_every_pair(cache: AttentionCache) -> None:
    assert cache.size == (H, W) and cache.grid == GRID and cache.name == "scene"
    assert len(cache.pairs) == 6 and cache.sources("depth") == ("semseg", "normals")
    assert cache.branches() == ("correlation", "self_attention", "magnitude")
    for pair in cache.pairs:
        assert cache.attention[pair].shape == (32, 32)
        np.testing.assert_allclose(cache.attention[pair].sum(axis=1), 1.0, atol=1e-5)
        assert cache.gate[pair].shape == (16, 32)
        assert 0.0 < cache.gate[pair].min() and cache.gate[pair].max() < 1.0
        assert cache.magnitude[pair].shape == (16, 32) and (cache.magnitude[pair] >= 0).all()
        assert cache.alpha[pair] == 0.0  # untrained: alpha starts at zero
    for task in cache.tasks:
        assert cache.predictions[task].shape == (H, W, 3) and cache.predictions[task].dtype == np.uint8


def test_cache_leaves_a_switched_off_branch_out_and_keeps_the_training_mode() -> None:
    model = _model(correlation=False).train()
    cache = AttentionCache.from_model(model, {"image": torch.rand(3, H, W)})
    assert cache.branches() == ("self_attention", "magnitude") and cache.attention == {}
    assert model.training
    with pytest.raises(UnknownBranchError, match="self_attention, magnitude"):
        branch_map(cache, "depth", "semseg", "correlation", 0, 0)


def test_cache_needs_a_densemtl_model() -> None:
    mtl = build_model("mtl", "SD", num_classes=5, decoder_widths=WIDTHS)
    with pytest.raises(ExplorerError, match="needs a DenseMTL model.*SharedEncoderMTL"):
        AttentionCache.from_model(mtl, {"image": torch.rand(3, H, W)})


@pytest.mark.parametrize("x, y, cell", [(0, 0, (0, 0)), (7, 7, (0, 0)), (8, 7, (0, 1)), (15, 16, (2, 1)),
                                        (63, 31, (3, 7))])
def test_query_cell_is_the_8x8_block_around_the_pixel(x: int, y: int, cell: tuple[int, int]) -> None:
    assert query_cell(_hand_cache(np.eye(32)), x, y) == cell


def test_correlation_map_is_the_query_row_on_the_source_grid() -> None:
    attention = np.eye(32)  # query cell k attends to source cell k only
    values = branch_map(_hand_cache(attention), "semseg", "depth", "correlation", x=15, y=16)
    expected = np.zeros(GRID)
    expected[2, 1] = 1.0
    np.testing.assert_array_equal(values, expected)


@pytest.mark.parametrize("branch, attribute", [("self_attention", "gate"), ("magnitude", "magnitude")])
def test_query_independent_branches_ignore_the_query(branch: str, attribute: str) -> None:
    hand = _hand_cache(np.eye(32))
    first = branch_map(hand, "depth", "semseg", branch, 0, 0)
    np.testing.assert_array_equal(first, branch_map(hand, "depth", "semseg", branch, 60, 30))
    np.testing.assert_array_equal(first, getattr(hand, attribute)["depth", "semseg"])


@pytest.mark.parametrize("target, source, branch, x, y, error, message", [
    ("depth", "depth", "correlation", 0, 0, UnknownPairError, "target='depth' <- source='depth'"),
    ("semseg", "edges", "correlation", 0, 0, UnknownPairError, "semseg<-depth"),
    ("semseg", "depth", "attention", 0, 0, UnknownBranchError, "branch='attention'"),
    ("semseg", "depth", "correlation", 64, 0, QueryOutsideImageError, "x=64"),
    ("semseg", "depth", "correlation", 0, -1, QueryOutsideImageError, "0 <= y < 32"),
])
def test_bad_requests_name_what_is_wrong(target, source, branch, x, y, error, message) -> None:
    hand = _hand_cache(np.eye(32))
    with pytest.raises(error, match=message):
        render_attention(hand, target, source, branch, x, y)


def test_render_attention_marks_the_query_and_shows_one_softmax_row(cache: AttentionCache) -> None:
    figure = render_attention(cache, "depth", "semseg", "correlation", x=21, y=13)
    image_panel, attention_panel = figure.axes[0], figure.axes[1]
    (marker,) = [line for line in image_panel.get_lines() if line.get_gid() == "query"]
    assert (list(marker.get_xdata()), list(marker.get_ydata())) == ([21], [13])
    shown = _branch_image(attention_panel)
    assert shown.shape == GRID
    assert shown.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(shown.ravel(), cache.attention["depth", "semseg"][1 * 8 + 2])
    assert "depth <- semseg" in figure.get_suptitle()


def test_a_view_redraws_one_figure_for_every_control_change(cache: AttentionCache) -> None:
    view = AttentionView(cache)
    first = view.update("depth", "semseg", "correlation", x=0, y=0)
    assert view.update("normals", "depth", "self_attention", x=63, y=31) is first
    branch_panel, magnitude_panel = first.axes[1], first.axes[2]
    np.testing.assert_array_equal(_branch_image(branch_panel), cache.gate["normals", "depth"])
    assert _branch_image(branch_panel).shape == (16, 32)  # the gate is at H/2, the attention on the grid
    assert branch_panel.get_title() == "self-attention gate over depth positions"
    assert magnitude_panel.get_title() == "|f depth->normals| (any query)"
    (box,) = [patch for patch in first.axes[0].patches]
    assert box.get_xy() == (7 * 8 - 0.5, 3 * 8 - 0.5)  # the query cell (3, 7) of pixel (63, 31)
    assert first.axes[3].get_title() == "prediction: normals (target)"
    np.testing.assert_array_equal(first.axes[4].get_images()[0].get_array(), cache.predictions["depth"])


def test_figure_png_draws_at_the_requested_resolution(cache: AttentionCache) -> None:
    png = figure_png(render_attention(cache, "semseg", "normals", "magnitude", 5, 5), dpi=50)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (12 * 50, 230)  # figsize 12 x 4.6 inches


def test_render_query_grid_draws_every_pair_and_point(cache: AttentionCache) -> None:
    pairs, points = cache.pairs[:2], [(0, 0), (40, 20), (63, 31)]
    figure = render_query_grid(cache, pairs, points)
    assert len(figure.axes) == 6
    for row, pair in enumerate(pairs):
        for column, (x, y) in enumerate(points):
            ax = figure.axes[row * 3 + column]
            np.testing.assert_array_equal(_branch_image(ax), branch_map(cache, *pair, "correlation", x, y))
            assert f"({x}, {y})" in ax.get_title()
            ratio = branch_map(cache, *pair, "correlation", x, y).max() * 32
            assert ax.get_title().endswith(f"largest weight {ratio:.2f} x uniform")


def test_attention_entropy_is_one_when_uniform_and_zero_when_peaked() -> None:
    uniform = attention_entropy(_hand_cache(np.full((32, 32), 1 / 32)))
    assert all(value == pytest.approx(1.0) for value in uniform.values())
    peaked = attention_entropy(_hand_cache(np.eye(32)))
    assert all(value == pytest.approx(0.0, abs=1e-9) for value in peaked.values())
    half = np.zeros((32, 32))
    half[:, :2] = 0.5  # two equal positions: log 2 / log 32 = 1/5
    assert attention_entropy(_hand_cache(half))["semseg", "depth"] == pytest.approx(0.2)


def test_explorer_controls_follow_the_cache(cache: AttentionCache) -> None:
    explorer = attention_explorer(cache)
    (target, source, branch), (x, y) = explorer.children[0].children, explorer.children[1].children
    assert (x.max, y.max) == (W - 1, H - 1)
    assert not x.continuous_update and not y.continuous_update
    assert source.options == ("depth", "normals")
    assert [value for _, value in branch.options] == ["correlation", "self_attention", "magnitude"]
    target.value = "normals"
    assert source.options == ("semseg", "depth") and source.value == "semseg"


def test_query_points_fall_inside_their_class() -> None:
    labels = np.full((6, 8), 250)
    labels[1:4, 2:7] = 0  # a block: its middle (x=4, y=2) is in the class
    labels[5, :] = 2  # a row: the median column is 3.5, the nearest pixel in raster order is x=3
    labels[0, 0] = labels[0, 7] = labels[4, 0] = 13  # three corners: the median (x=0, y=0) is one of them
    assert query_points(labels, [0, 2, 13, 10]) == {0: (4, 2), 2: (3, 5), 13: (0, 0)}


def test_query_points_accept_tensors() -> None:
    labels = torch.zeros(4, 4, dtype=torch.int64)
    assert query_points(labels, [0]) == {0: (1, 1)}


def test_show_maps_stretches_each_map_over_the_image() -> None:
    gate = np.linspace(0, 1, 16 * 32).reshape(16, 32)
    figure = show_maps(np.zeros((H, W, 3)), {"gate": gate, "row": np.eye(4, 8)}, "steps", query=(5, 6))
    assert len(figure.axes) == 5  # image, two maps, two colour bars
    assert figure.axes[1].get_images()[1].get_extent() == [-0.5, W - 0.5, H - 0.5, -0.5]
    np.testing.assert_array_equal(np.asarray(figure.axes[2].get_images()[1].get_array()), np.eye(4, 8))
    assert all(any(line.get_gid() == "query" for line in ax.get_lines()) for ax in figure.axes[:3])


def test_pair_statistics_show_entropy_and_alpha(cache: AttentionCache) -> None:
    figure = show_pair_statistics(cache)
    entropy_panel, alpha_panel = figure.axes
    assert [tick.get_text() for tick in entropy_panel.get_yticklabels()][0] == "semseg <- depth"
    widths = [bar.get_width() for bar in entropy_panel.patches]
    assert widths == pytest.approx([attention_entropy(cache)[pair] for pair in cache.pairs])
    assert [bar.get_width() for bar in alpha_panel.patches] == [0.0] * 6


def test_caches_round_trip_through_one_npz_without_pickle(cache: AttentionCache, tmp_path) -> None:
    switched = AttentionCache.from_model(_model(correlation=False), {"image": torch.rand(3, H, W), "name": "off"})
    about = {"checkpoint": "runs/x/checkpoints/best.pt", "seed": 3}
    path = save_caches([cache, switched], tmp_path / "caches.npz", about)
    loaded, loaded_about = load_caches(path)
    assert loaded_about == about and len(loaded) == 2
    for before, after in zip([cache, switched], loaded):
        assert (after.name, after.tasks, after.grid, after.alpha) == (before.name, before.tasks, before.grid,
                                                                      before.alpha)
        np.testing.assert_array_equal(after.image, before.image)
        for field in ("attention", "gate", "magnitude", "predictions"):
            stored, kept = getattr(before, field), getattr(after, field)
            assert stored.keys() == kept.keys()
            for key in stored:
                np.testing.assert_array_equal(kept[key], stored[key])
    assert loaded[1].branches() == ("self_attention", "magnitude")
    with np.load(path, allow_pickle=False) as stored:  # readable without pickle
        assert "header" in stored.files
