"""Tests for densemtl_lab.viz.hover: the binary payloads, the lazy rows and the widget's messages.

What the page draws is checked in the browser (tests/test_browser.py); here, that what crosses the
wire decodes back to the AttentionCache's arrays, that lazily requested rows are the right rows, and
that no list of floats is in the synced state or a message header.
"""

from __future__ import annotations

import json
from typing import Any

import matplotlib
import numpy as np
import pytest
import torch

from densemtl_lab.models import build_model
from densemtl_lab.viz.explorer import (
    AttentionCache,
    ExplorerError,
    QueryOutsideImageError,
    UnknownBranchError,
    query_cell,
)
from densemtl_lab.viz.hover import (
    HoverExplorer,
    Payload,
    attention_bytes,
    colour_table,
    dequantise,
    image_payload,
    quantise,
    rows_payload,
)

H, W = 32, 64  # attention grid 4 x 8 (ds = 4 on H/2), 32 query cells


@pytest.fixture(scope="module")
def cache() -> AttentionCache:
    torch.manual_seed(0)
    model = build_model("densemtl", "SDN", num_classes=5, decoder_widths=(8, 16, 16, 32, 32))
    return AttentionCache.from_model(model, {"image": torch.rand(3, H, W), "name": "scene"})


def _decoding_error_bound(ranges: np.ndarray) -> np.ndarray:
    return (ranges[..., 1:] - ranges[..., :1]) / 510 + 1e-6


def _floats_in(value: Any) -> list[float]:
    """Every float in a JSON-like value (bytes and memoryviews are binary buffers, not JSON)."""
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [found for item in value.values() for found in _floats_in(item)]
    if isinstance(value, (list, tuple)):
        return [found for item in value for found in _floats_in(item)]
    return []


def test_quantise_codes_each_row_on_its_own_range_within_half_a_level():
    values = np.array([[0.0, 0.25, 0.5, 1.0], [2.0, 2.0, 2.0, 2.0], [-1.0, 3.0, 1.0, 0.0]], np.float32)
    codes, ranges = quantise(values)
    assert codes.dtype == np.uint8 and ranges.dtype == np.float32
    np.testing.assert_array_equal(codes[0], [0, 64, 128, 255])  # round(0.25 * 255) = 64
    np.testing.assert_array_equal(codes[1], [0, 0, 0, 0])  # a constant row
    np.testing.assert_array_equal(codes[2], [0, 255, 128, 64])
    np.testing.assert_array_equal(ranges, [[0, 1], [2, 2], [-1, 3]])
    decoded = dequantise(codes, ranges)
    assert (np.abs(decoded - values) <= _decoding_error_bound(ranges)).all()
    np.testing.assert_array_equal(decoded[1], values[1])


def test_quantise_of_softmax_rows_keeps_them_within_the_bound():
    rows = torch.softmax(torch.randn(50, 128, generator=torch.Generator().manual_seed(3)) * 0.05, dim=1).numpy()
    codes, ranges = quantise(rows)  # near-uniform rows: the range, not the value, sets the levels
    error = np.abs(dequantise(codes, ranges) - rows)
    assert (error <= _decoding_error_bound(ranges)).all()
    # each row stretched over its own range (all 256 levels), not over 0..max (a handful of levels)
    assert (codes.min(axis=1) == 0).all() and (codes.max(axis=1) == 255).all()
    assert len(np.unique(codes[0])) > 64


def test_colour_table_is_matplotlibs_inferno():
    table = colour_table()
    assert table.shape == (256, 3) and table.dtype == np.uint8
    expected = np.rint(np.array(matplotlib.colormaps["inferno"].colors) * 255)
    np.testing.assert_array_equal(table, expected)


def test_image_payload_decodes_to_the_cache_within_the_quantisation_error(cache):
    payload = image_payload(cache, lazy=False)
    arrays = payload.arrays()
    np.testing.assert_array_equal(arrays["image"], np.rint(cache.image * 255).astype(np.uint8))
    np.testing.assert_array_equal(arrays["predictions"], np.stack([cache.predictions[t] for t in cache.tasks]))
    assert arrays["correlation"].shape == (6, 32, 32)  # pairs, Nq, Nk
    for p, pair in enumerate(cache.pairs):
        attention = dequantise(arrays["correlation"][p], arrays["correlation_range"][p])
        bound = _decoding_error_bound(arrays["correlation_range"][p])
        assert (np.abs(attention - cache.attention[pair]) <= bound).all()
        for branch, stored in (("self_attention", cache.gate), ("magnitude", cache.magnitude)):
            decoded = dequantise(arrays[branch][p], arrays[f"{branch}_range"][p]).reshape(H // 2, W // 2)
            assert (np.abs(decoded - stored[pair]) <= _decoding_error_bound(arrays[f"{branch}_range"][p])).all()
    assert payload.header["pairs"] == [list(pair) for pair in cache.pairs]
    assert payload.header["grid"] == [4, 8] and payload.header["half"] == [16, 32]


def test_payload_is_one_byte_per_value_plus_ranges(cache):
    payload = image_payload(cache, lazy=False)
    pairs, cells, half = 6, 32, (H // 2) * (W // 2)
    pictures = H * W * 3 * (1 + 3)  # the image and three predictions
    ranges = 4 * 2 * (pairs * cells + 2 * pairs)
    assert attention_bytes(cache) == pairs * cells * cells
    assert payload.nbytes == pictures + pairs * cells * cells + 2 * pairs * half + ranges


def test_lazy_payload_leaves_the_attention_to_row_requests(cache):
    lazy = image_payload(cache, lazy=True)
    assert lazy.header["lazy"] is True
    assert "correlation" not in lazy.arrays() and "correlation" in lazy.header["branches"]
    assert lazy.nbytes == image_payload(cache, lazy=False).nbytes - attention_bytes(cache) - 4 * 2 * 6 * 32


@pytest.mark.parametrize("x, y", [(0, 0), (37, 21), (63, 31)])
def test_rows_payload_holds_the_query_cells_row_of_every_pair(cache, x, y):
    row, column = query_cell(cache, x, y)
    cell = row * cache.grid[1] + column
    payload = rows_payload(cache, cell)
    arrays = payload.arrays()
    assert payload.header["cell"] == cell and arrays["rows"].shape == (6, 32)
    for p, pair in enumerate(cache.pairs):
        decoded = dequantise(arrays["rows"][p], arrays["rows_range"][p])
        expected = cache.attention[pair][cell]
        assert (np.abs(decoded - expected) <= _decoding_error_bound(arrays["rows_range"][p])).all()
        others = np.delete(cache.attention[pair], cell, axis=0)  # and not any other query's row
        assert np.abs(others - decoded).max(axis=1).min() > np.abs(decoded - expected).max()


def test_rows_payload_refuses_a_cell_outside_the_grid(cache):
    with pytest.raises(ExplorerError, match="query cell 32 is outside the 4x8 grid"):
        rows_payload(cache, 32)


def test_rows_of_a_float16_cache_decode_like_float32():
    cells = 4 * 8
    rng = np.random.default_rng(0)
    attention = rng.dirichlet(np.ones(cells), size=cells).astype(np.float16)
    pairs = [("semseg", "depth"), ("depth", "semseg")]
    half = np.ones((16, 32), np.float32)
    small = AttentionCache("f16", np.zeros((H, W, 3), np.float32), ("semseg", "depth"), (4, 8),
                           {pair: attention for pair in pairs}, {}, {pair: half for pair in pairs}, {},
                           {task: np.zeros((H, W, 3), np.uint8) for task in ("semseg", "depth")})
    arrays = rows_payload(small, 9).arrays()
    bound = _decoding_error_bound(arrays["rows_range"][0])
    assert (np.abs(dequantise(arrays["rows"][0], arrays["rows_range"][0]) - attention[9]) <= bound).all()


def _widget(caches, **options) -> tuple[HoverExplorer, list[tuple[dict, list]]]:
    widget = HoverExplorer(caches, **options)
    sent: list[tuple[dict, list]] = []
    widget.send = lambda content, buffers=None: sent.append((content, buffers))
    return widget, sent


def test_widget_state_has_no_float_lists_and_sends_the_image_on_request(cache):
    widget, sent = _widget([cache, cache], image_index=1)
    state = widget.get_state()
    assert not _floats_in(state)
    assert state["names"] == ["scene", "scene"] and state["query"] == [W // 2, H // 2]
    assert len(state["thumbnails"]) == 2 * 36 * 72 * 3 and len(state["colourmap"]) == 256 * 3
    widget._answer(widget, {"kind": "image", "index": 1}, [])
    (content, buffers), = sent
    assert content["kind"] == "image" and content["index"] == 1 and content["lazy"] is False
    assert not _floats_in(content)
    json.dumps(content)  # the header is plain JSON; the arrays travel as buffers
    expected = image_payload(cache, lazy=False)
    assert [bytes(b) for b in buffers] == [bytes(b) for b in expected.buffers]


def test_widget_sends_rows_lazily_above_its_byte_limit(cache):
    widget, sent = _widget(cache, max_eager_bytes=attention_bytes(cache) - 1)
    assert widget.lazy(0)
    widget._answer(widget, {"kind": "image", "index": 0}, [])
    widget._answer(widget, {"kind": "rows", "index": 0, "cell": 13}, [])
    (image, image_buffers), (rows, row_buffers) = sent
    assert image["lazy"] is True and "correlation" not in [entry["name"] for entry in image["buffers"]]
    assert rows["cell"] == 13 and not _floats_in(rows)
    arrays = Payload(rows, row_buffers).arrays()
    for p, pair in enumerate(cache.pairs):
        decoded = dequantise(arrays["rows"][p], arrays["rows_range"][p])
        assert (np.abs(decoded - cache.attention[pair][13]) <= _decoding_error_bound(arrays["rows_range"][p])).all()


def test_widget_checks_what_it_is_given(cache):
    with pytest.raises(ExplorerError, match="at least one AttentionCache"):
        HoverExplorer([])
    with pytest.raises(ExplorerError, match="image_index=2 is outside the 1 images"):
        HoverExplorer(cache, image_index=2)
    with pytest.raises(UnknownBranchError, match="branch='heat'"):
        HoverExplorer(cache, branch="heat")
    widget, _ = _widget(cache)
    with pytest.raises(ExplorerError, match="asked for image 3"):
        widget._answer(widget, {"kind": "image", "index": 3}, [])
    widget.query, widget.branch = [63, 31], "magnitude"  # what Python may set, the page then draws
    with pytest.raises(QueryOutsideImageError, match=r"query=\[64, 0\] lies outside the 32x64 image"):
        widget.query = [64, 0]
    with pytest.raises(UnknownBranchError, match="branch='heat'"):
        widget.branch = "heat"
    with pytest.raises(ExplorerError, match="image_index=1 is outside the 1 images"):
        widget.image_index = 1
    assert (widget.query, widget.branch) == ([63, 31], "magnitude")


def test_widget_module_is_the_shipped_es_module():
    source = str(HoverExplorer._esm)
    assert "export default { render }" in source
    assert "JSON.parse" not in source  # arrays come as buffers, never as JSON text
