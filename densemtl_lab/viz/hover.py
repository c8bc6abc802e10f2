"""The hover explorer: every xTAM's map for the query under the mouse, drawn by the browser (notebook 05).

`HoverExplorer` is an anywidget (one ES module, `hover.js`, no build step): the image, and for each
ordered task pair (target i <- source j) the chosen branch's map (correlation attention row,
self-attention gate or |f_{j->i}|, as in `explorer.branch_map`), laid out targets x sources, with
each task's prediction on the diagonal. The mouse over the image or any map sets the query pixel, a
click pins it, arrow keys move it; `b` switches the branch, `s` the colour scale, `[` `]` the image.

The kernel sends each image once (`image_payload`): uint8 codes with one (low, high) float32 range
per row or map (`quantise`), in binary buffers; only names and integers travel as JSON. The page then
answers every mouse move itself. When an image's attention is larger than `max_eager_bytes` (the
paper's 8,192 x 8,192 per pair at 512x1024), the page asks the kernel for the rows of the query cell
it needs (`rows_payload`) and keeps them in a cache. The matplotlib explorer
(`explorer.attention_explorer`, `explorer.render_query_grid`) stays the fallback for headless runs
and front ends without widgets; both read the same `AttentionCache`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anywidget
import matplotlib
import numpy as np
import traitlets

from densemtl_lab.viz.explorer import (
    BRANCHES,
    AttentionCache,
    ExplorerError,
    QueryOutsideImageError,
    UnknownBranchError,
)

#: The colour map of the maps: matplotlib's, as in the static explorer, sent as a 256 x RGB table.
COLOURMAP = "inferno"
#: Attention codes above this many bytes per image are sent row by row, when the page needs them.
MAX_EAGER_BYTES = 32 * 2**20
THUMBNAIL_SIZE = (36, 72)  # H, W of the image strip's pictures
_BRANCH_FIELDS = {"correlation": "attention", "self_attention": "gate", "magnitude": "magnitude"}


@dataclass(frozen=True)
class Payload:
    """One message to the page: a JSON header (names and integers only) and its binary buffers."""

    header: dict[str, Any]
    buffers: list[memoryview]

    @property
    def nbytes(self) -> int:
        """Bytes of the buffers (the header's few hundred bytes of JSON left out)."""
        return sum(buffer.nbytes for buffer in self.buffers)

    def arrays(self) -> dict[str, np.ndarray]:
        """The buffers as arrays, by the names and shapes of `header["buffers"]` (what hover.js reads)."""
        return {entry["name"]: np.frombuffer(buffer, dtype=entry["dtype"]).reshape(entry["shape"])
                for entry, buffer in zip(self.header["buffers"], self.buffers)}


def quantise(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 codes of `values` [..., N] and each last-axis row's (low, high) as float32 [..., 2].

    code = round((v - low) / (high - low) * 255): each row stretched over 256 levels, the colour
    map's own resolution, so a map coloured on its own range reads its colour index straight from
    the code. Decoding (`dequantise`) is off by at most (high - low) / 510. A constant row codes as 0.
    """
    values = np.asarray(values, dtype=np.float32)
    low = values.min(axis=-1, keepdims=True)
    high = values.max(axis=-1, keepdims=True)
    span = high - low
    scale = np.divide(255.0, span, out=np.zeros_like(span), where=span > 0)
    codes = np.clip(np.rint((values - low) * scale), 0, 255).astype(np.uint8)
    return codes, np.concatenate([low, high], axis=-1)


def dequantise(codes: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """The values `quantise` coded, to within (high - low) / 510 per row."""
    low, high = ranges[..., :1], ranges[..., 1:]
    return low + codes.astype(np.float32) * ((high - low) / 255.0)


def colour_table(name: str = COLOURMAP) -> np.ndarray:
    """The matplotlib colour map `name` as a [256, 3] uint8 table (entry k: colour of level k / 255)."""
    table = matplotlib.colormaps[name].resampled(256)(np.arange(256))[:, :3]
    return np.rint(table * 255).astype(np.uint8)


def _rgb8(picture: np.ndarray) -> np.ndarray:
    """An H x W x 3 picture as uint8 (floats are taken in [0, 1])."""
    if picture.dtype == np.uint8:
        return picture
    return np.rint(np.clip(picture, 0.0, 1.0) * 255).astype(np.uint8)


def _thumbnail(picture: np.ndarray) -> np.ndarray:
    """The picture resampled (nearest) to THUMBNAIL_SIZE."""
    rows = np.arange(THUMBNAIL_SIZE[0]) * picture.shape[0] // THUMBNAIL_SIZE[0]
    columns = np.arange(THUMBNAIL_SIZE[1]) * picture.shape[1] // THUMBNAIL_SIZE[1]
    return _rgb8(picture)[rows[:, None], columns]


def _pack(named: Sequence[tuple[str, np.ndarray]]) -> tuple[list[dict[str, Any]], list[memoryview]]:
    entries = [{"name": name, "dtype": array.dtype.str, "shape": list(array.shape)} for name, array in named]
    return entries, [memoryview(np.ascontiguousarray(array)).cast("B") for _, array in named]


def attention_bytes(cache: AttentionCache) -> int:
    """Bytes the correlation codes of every pair take (Npairs x Nq x Nk, one byte each)."""
    return sum(int(np.prod(attention.shape)) for attention in cache.attention.values())


def image_payload(cache: AttentionCache, lazy: bool) -> Payload:
    """Everything the page draws for one image; the attention rows too unless `lazy`.

    Buffers: image [H, W, 3] and predictions [T, H, W, 3] as uint8; per branch, codes [P, ...] with
    ranges [P, ..., 2] (`quantise`): gate and magnitude one range per map [P, H/2 * W/2], attention
    one per row [P, Nq, Nk]. P runs over `cache.pairs`, T over `cache.tasks`.
    """
    named: list[tuple[str, np.ndarray]] = [
        ("image", _rgb8(cache.image)),
        ("predictions", np.stack([_rgb8(cache.predictions[task]) for task in cache.tasks])),
    ]
    for branch in cache.branches():
        if branch == "correlation" and lazy:
            continue
        stored = getattr(cache, _BRANCH_FIELDS[branch])
        flat = np.stack([stored[pair].reshape(stored[pair].shape[0], -1) if branch == "correlation"
                         else stored[pair].reshape(-1) for pair in cache.pairs])
        codes, ranges = quantise(flat)
        named += [(branch, codes), (f"{branch}_range", ranges)]
    half = next(iter(cache.magnitude.values())).shape
    entries, buffers = _pack(named)
    header = {"name": cache.name, "size": list(cache.size), "grid": list(cache.grid), "half": list(half),
              "tasks": list(cache.tasks), "pairs": [list(pair) for pair in cache.pairs],
              "branches": list(cache.branches()), "lazy": lazy, "buffers": entries}
    return Payload(header, buffers)


def rows_payload(cache: AttentionCache, cell: int) -> Payload:
    """The correlation rows of query cell `cell` (row-major over the grid) for every pair: codes [P, Nk]."""
    cells = cache.grid[0] * cache.grid[1]
    if "correlation" not in cache.branches():
        raise UnknownBranchError("this model has no correlation branch, so no attention rows to send")
    if not 0 <= cell < cells:
        raise ExplorerError(f"query cell {cell} is outside the {cache.grid[0]}x{cache.grid[1]} grid; "
                            f"give 0 <= cell < {cells}")
    codes, ranges = quantise(np.stack([cache.attention[pair][cell] for pair in cache.pairs]))
    entries, buffers = _pack([("rows", codes), ("rows_range", ranges)])
    return Payload({"cell": cell, "buffers": entries}, buffers)


class HoverExplorer(anywidget.AnyWidget):
    """The attention explorer drawn in the browser, over one AttentionCache or a list of them.

    Synced state (what Python reads and may set): `image_index`, `branch`, `scale` ("map": each map
    on its own range, or "shared": one range per branch and query), `query` [x, y] in image pixels
    and `pinned` (the page reports the query when it is pinned, not on every mouse move).
    """

    _esm = Path(__file__).with_name("hover.js")

    names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    thumbnails = traitlets.Bytes().tag(sync=True)  # uint8 [images, *THUMBNAIL_SIZE, 3]
    thumbnail_size = traitlets.List(traitlets.Int()).tag(sync=True)
    colourmap = traitlets.Bytes().tag(sync=True)  # uint8 [256, 3]
    branch_labels = traitlets.Dict(value_trait=traitlets.Unicode()).tag(sync=True)
    image_index = traitlets.Int(0).tag(sync=True)
    branch = traitlets.Unicode("correlation").tag(sync=True)
    scale = traitlets.Enum(("map", "shared"), "map").tag(sync=True)
    query = traitlets.List(traitlets.Int(), minlen=2, maxlen=2).tag(sync=True)
    pinned = traitlets.Bool(False).tag(sync=True)

    def __init__(self, caches: AttentionCache | Sequence[AttentionCache], image_index: int = 0,
                 branch: str | None = None, max_eager_bytes: int = MAX_EAGER_BYTES, **kwargs: Any) -> None:
        """Explore `caches` (one per image); attention above `max_eager_bytes` is sent row by row."""
        self.caches = [caches] if isinstance(caches, AttentionCache) else list(caches)
        if not self.caches:
            raise ExplorerError("HoverExplorer needs at least one AttentionCache (AttentionCache.from_model)")
        first = self.caches[self._check_index(image_index)]
        self.max_eager_bytes = max_eager_bytes
        height, width = first.size
        super().__init__(
            names=[cache.name or f"image {index}" for index, cache in enumerate(self.caches)],
            thumbnails=np.stack([_thumbnail(cache.image) for cache in self.caches]).tobytes(),
            thumbnail_size=list(THUMBNAIL_SIZE), colourmap=colour_table().tobytes(),
            branch_labels=dict(BRANCHES), image_index=image_index, branch=branch or first.branches()[0],
            query=[width // 2, height // 2], **kwargs)
        self.on_msg(self._answer)

    def _check_index(self, index: int) -> int:
        if not 0 <= index < len(self.caches):
            raise ExplorerError(f"image_index={index} is outside the {len(self.caches)} images given")
        return index

    @traitlets.validate("image_index")
    def _valid_image_index(self, proposal: dict[str, Any]) -> int:
        return self._check_index(proposal["value"])

    @traitlets.validate("query")
    def _valid_query(self, proposal: dict[str, Any]) -> list[int]:
        x, y = proposal["value"]
        height, width = self.caches[self.image_index].size
        if not (0 <= x < width and 0 <= y < height):
            raise QueryOutsideImageError(f"query=[{x}, {y}] lies outside the {height}x{width} image; "
                                         f"give 0 <= x < {width} and 0 <= y < {height}")
        return proposal["value"]

    @traitlets.validate("branch")
    def _valid_branch(self, proposal: dict[str, Any]) -> str:
        branches = self.caches[self.image_index].branches()
        if proposal["value"] not in branches:
            raise UnknownBranchError(f"branch={proposal['value']!r}; choose one of {', '.join(branches)}")
        return proposal["value"]

    def lazy(self, index: int) -> bool:
        """Whether image `index` sends its attention rows on request instead of whole."""
        return attention_bytes(self.caches[index]) > self.max_eager_bytes

    def _answer(self, _widget: Any, content: dict[str, Any], _buffers: list[bytes]) -> None:
        """Answer the page's requests: {"kind": "image", "index"} and {"kind": "rows", "index", "cell"}."""
        index = int(content["index"])
        if not 0 <= index < len(self.caches):
            raise ExplorerError(f"the page asked for image {index}; there are {len(self.caches)}")
        if content["kind"] == "image":
            payload = image_payload(self.caches[index], self.lazy(index))
        elif content["kind"] == "rows":
            payload = rows_payload(self.caches[index], int(content["cell"]))
        else:
            raise ExplorerError(f"the page sent an unknown request kind {content['kind']!r}")
        self.send({"kind": content["kind"], "index": index, **payload.header}, payload.buffers)


__all__ = ["COLOURMAP", "HoverExplorer", "MAX_EAGER_BYTES", "Payload", "attention_bytes", "colour_table",
           "dequantise", "image_payload", "quantise", "rows_payload"]
