"""The lessons in a real browser: JupyterLab in headless Chromium runs notebooks 01 and 05 end to end.

Debian's Chromium (`apt-get install -y chromium`) is driven by playwright (PyPI, its bundled driver) with
the system browser as its executable: nothing is downloaded at run time. The server runs the kernels in
the smoke profile with a throw-away OUTPUT_DIR, and widgets on (a real front end draws them). Screenshots
of what a learner sees land in test-artifacts/browser/; on a failure, a screenshot and the server log too.
`make test` installs Chromium when it may (tests/install_chromium.sh); without one, these tests skip
with a reason that says how to enable them.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import matplotlib
import nbformat
import numpy as np
import pytest
from labserver import LabOptions, LabServer, group_alive, pid_alive, start_lab
from PIL import Image
from playwright.sync_api import Locator, Page, expect, sync_playwright

from densemtl_lab.viz.explorer import COURSE_ATTENTION, AttentionCache, load_caches, query_cell

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = os.environ.get("DENSEMTL_CHROMIUM", "/usr/bin/chromium")
#: Flags for a headless Chromium on a machine without a network (they worked on an offline 2-core machine).
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 860}
RUN_TIMEOUT_MS = 150_000  # a whole smoke notebook, kernel start included
QUERY_SLIDER = "query x"  # the attention explorer's slider that the test moves

#: The kernel's environment: smoke profile on the CPU, widgets drawn by JupyterLab, inline figures.
KERNEL_VARIABLES = {"DENSEMTL_PROFILE": "smoke", "DENSEMTL_DEVICE": "cpu", "DENSEMTL_SEED": "0",
                    "DENSEMTL_DATA_ROOT": ""}
UNSET_FOR_KERNEL = ("DENSEMTL_WIDGETS", "MPLBACKEND")  # conftest.py sets these for headless runs
#: Every cell attached to the page: JupyterLab's default skips drawing cells off screen, and their
#: guessed heights make a scrolled-to figure jump away when the cells above it are drawn.
LAB_SETTINGS = {"@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"}}

if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM}: install it (`sudo apt-get install chromium`, or run `make test` "
                f"as root) or set DENSEMTL_CHROMIUM to a Chromium binary", allow_module_level=True)


@pytest.fixture(scope="module")
def notebook_copy(tmp_path_factory) -> Path:
    """The lessons copied into a scratch folder: the browser saves them after running, the repo stays clean."""
    folder = tmp_path_factory.mktemp("lab") / "notebooks"
    shutil.copytree(NOTEBOOKS, folder, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return folder


@pytest.fixture(scope="module")
def kernel_outputs(module_folder) -> Path:
    """The kernels' OUTPUT_DIR: checkpoints and each notebook's metrics.json."""
    folder = module_folder / "outputs"
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def lab_server(notebook_copy, kernel_outputs, tmp_path_factory):
    """JupyterLab on 127.0.0.1 with a token and fresh settings; stopped by process group, checked gone."""
    scratch = tmp_path_factory.mktemp("lab-server")
    environment = {name: value for name, value in os.environ.items() if name not in UNSET_FOR_KERNEL}
    environment.update(KERNEL_VARIABLES, DENSEMTL_OUTPUT_DIR=str(kernel_outputs))
    kernels = tuple(sorted({nbformat.read(path, as_version=4).metadata["kernelspec"]["name"]
                            for path in notebook_copy.glob("*.ipynb")}))
    options = LabOptions(notebook_copy, kernels=kernels, environment=environment, settings=LAB_SETTINGS,
                         workdir=scratch / "work")
    try:
        server = start_lab(options)
    except Exception:
        _keep(scratch / "work" / "server.log", "server-start.log")
        raise
    try:
        yield server
    finally:
        stopped = server.stop()
        assert not group_alive(server.process_group), f"process group {server.process_group} survived stop()"
        assert not [pid for pid in stopped if pid_alive(pid)], "a kernel or helper survived stop()"


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    """Debian's Chromium, headless, with a fresh profile folder."""
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_FLAGS, viewport=VIEWPORT)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context) -> Iterator[Page]:
    """A new browser tab for one test."""
    page = browser_context.new_page()
    yield page
    page.close()


def _keep(source: Path, name: str) -> None:
    """Copy `source` (if it exists) into the test artefacts as `name`."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if source.is_file():
        shutil.copyfile(source, ARTIFACTS / name)


def keep_screenshot(page: Page, name: str) -> None:
    """Save what the window shows as test-artifacts/browser/<name>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png")


@contextmanager
def artefacts_on_failure(page: Page, server: LabServer, name: str) -> Iterator[None]:
    """On any failure inside the block, keep a screenshot of the page and the server log."""
    try:
        yield
    except BaseException:
        keep_screenshot(page, f"{name}-failure")
        _keep(server.log_path, f"{name}-server.log")
        raise


def open_notebook(page: Page, server: LabServer, path: str) -> None:
    """Open `path` alone in a fresh workspace and wait until its kernel has started and is idle."""
    page.goto(server.notebook_url(path, fresh_workspace=True))
    # "No Kernel | Idle" comes first; the kernel's own name appears once it has started and connected.
    page.wait_for_function("""() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]
        .some(item => / \\| Idle$/.test(item.textContent) && !item.textContent.startsWith('No Kernel'))""",
                           timeout=RUN_TIMEOUT_MS)
    page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()  # more room for the lesson


def choose(page: Page, menu: str, item: str) -> None:
    """Pick `item` from the menu bar's `menu`, as a learner would."""
    page.get_by_role("menuitem", name=menu, exact=True).click()
    page.get_by_role("menuitem", name=item, exact=True).click()


def run_all_cells(page: Page) -> None:
    """Clear the stored outputs, Run > Run All Cells, and wait until the run is over.

    Over means: the kernel is idle, no cell waits ([*]) and some cell has an execution count. After
    an error the kernel skips the cells below it, which keep an empty prompt ([ ]); the saved
    notebook then tells which cell failed and why.
    """
    choose(page, "Edit", "Clear Outputs of All Cells")
    choose(page, "Run", "Run All Cells")
    page.wait_for_function("""() => {
        const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')]
            .map(prompt => prompt.textContent);
        const status = document.querySelector('.jp-Notebook-ExecutionIndicator');
        return prompts.some(text => /\\[\\d+\\]/.test(text)) && !prompts.some(text => text.includes('*'))
            && status !== null && status.dataset.status === 'idle';
    }""", timeout=RUN_TIMEOUT_MS)


def save_and_read(page: Page, path: Path) -> nbformat.NotebookNode:
    """Save the notebook from the browser (Ctrl+S) and read back what JupyterLab wrote."""
    page.keyboard.press("Control+s")
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.jp-mod-dirty").wait_for(state="detached")
    return nbformat.read(path, as_version=4)


def assert_no_errors(notebook: nbformat.NotebookNode) -> None:
    """Every code cell ran, and none shows an error output."""
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        assert cell.execution_count is not None, f"code cell {index} did not run: {cell.source[:80]!r}"
        errors = [f"{out.ename}: {out.evalue}" for out in cell.outputs if out.output_type == "error"]
        assert not errors, f"code cell {index} shows an error: {errors[0]}"


def bring_into_view(locator: Locator) -> None:
    """Scroll the notebook so that the element sits in the middle of the window."""
    locator.evaluate("element => element.scrollIntoView({block: 'center'})")
    expect(locator).to_be_in_viewport()


def assert_ran_in_smoke(outputs: Path, notebook: str) -> None:
    """The kernel inherited the server's environment: the notebook wrote its metrics in the smoke profile."""
    metrics = outputs / notebook / "metrics.json"
    assert metrics.is_file(), f"{notebook} wrote no {metrics}: the kernel did not get DENSEMTL_OUTPUT_DIR"
    assert json.loads(metrics.read_text())["profile"] == "smoke"


def picture(locator: Locator) -> np.ndarray:
    """The element's pixels as shown on screen (RGB)."""
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB"))


def drag_slider(page: Page, slider: Locator, fraction: float) -> None:
    """Drag the slider's handle with the mouse to `fraction` of its track, as a learner would."""
    track = slider.locator(".noUi-target").bounding_box()
    handle = slider.locator(".noUi-handle").bounding_box()
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + fraction * track["width"], track["y"] + track["height"] / 2, steps=8)
    page.mouse.up()


def run_in_lab(page, lab_server, notebook_copy: Path, kernel_outputs, stem: str) -> None:
    """Open a lesson in JupyterLab, run all its cells, and check it ran in smoke without an error."""
    open_notebook(page, lab_server, f"{stem}.ipynb")
    run_all_cells(page)
    assert_no_errors(save_and_read(page, notebook_copy / f"{stem}.ipynb"))
    assert_ran_in_smoke(kernel_outputs, stem)


def test_notebook_01_runs_in_jupyterlab_and_shows_its_3d_point_cloud(page, lab_server, notebook_copy,
                                                                     kernel_outputs):
    with artefacts_on_failure(page, lab_server, "01_data"):
        run_in_lab(page, lab_server, notebook_copy, kernel_outputs, "01_data")
        canvas = page.locator(".jp-OutputArea .js-plotly-plot .gl-container canvas").first  # plotly 3D: WebGL
        bring_into_view(canvas)
        box = canvas.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 100, f"plotly canvas is {box}"
        keep_screenshot(page, "01_data")


def test_notebook_05_attention_explorer_redraws_when_its_slider_moves(page, lab_server, notebook_copy,
                                                                     kernel_outputs):
    with artefacts_on_failure(page, lab_server, "05_attention_maps"):
        run_in_lab(page, lab_server, notebook_copy, kernel_outputs, "05_attention_maps")
        # the last slider explorer: the shipped course model's (the learner's own comes first)
        slider = page.locator(".widget-hslider", has=page.get_by_text(QUERY_SLIDER, exact=True)).last
        explorer = page.locator(".widget-vbox", has=slider).last
        figure = explorer.locator(".widget-output img")
        bring_into_view(figure)
        shown, before, value = figure.get_attribute("src"), picture(figure), slider.locator(".widget-readout")
        start = value.inner_text()
        drag_slider(page, slider, 0.1)
        expect(figure).not_to_have_attribute("src", shown, timeout=60_000)  # the kernel drew a new figure
        after = picture(figure)
        assert value.inner_text() != start, f"the {QUERY_SLIDER} slider did not move from {start}"
        assert before.shape != after.shape or (before != after).any(axis=-1).mean() > 0.001, \
            "the explorer's figure looks the same after the slider moved"
        assert explorer.locator("[data-mime-type='application/vnd.jupyter.stderr']").count() == 0, \
            "the explorer shows an error after the slider moved"
        keep_screenshot(page, "05_attention_maps")


# --- the hover explorer (densemtl_lab/viz/hover.py): answered in the page, checked against the cache ----

HOVER_MOVES = 50
#: The notebook's own DenseMTL on two toy validation scenes at the quick profile's size (64x128, grid
#: 8x16), beside the cache of cell-10's explorer, saved for the test to read what the page should draw.
QUICK_SIZE_CELL = """\
from densemtl_lab.viz.hover import HoverExplorer
quick_caches = [explorer.AttentionCache.from_model(dense.model, lab.dataset("val", size=(64, 128))[index])
                for index in range(2)]
explorer.save_caches([cache, *quick_caches], f"{OUTPUT_DIR}/hover_caches.npz", {"test": "browser"})
display(HoverExplorer(quick_caches))"""
#: The paper's size (512x1024, grid 64x128: 8,192 x 8,192 rows per pair, float16) with synthetic
#: softmax(Q K^T / 4) rows: too large to send whole (6 pairs: 384 MiB of codes), so sent row by row.
PAPER_SIZE_CELL = """\
import numpy as np
import torch
from densemtl_lab.models import build_model

# a randomly initialised DenseMTL of the paper's size (ResNet-101, widths 64-256, 16 classes) on one
# 512x1024 image: six pairs of 8,192 x 8,192 attention rows, which the page asks for row by row
torch.manual_seed(0)
paper_model = build_model("densemtl", "SDN", num_classes=16, backbone="resnet101", weights=None,
                          decoder_widths=(64, 128, 128, 256, 256))
paper = explorer.AttentionCache.from_model(paper_model, {"image": torch.rand(3, 512, 1024), "name": "paper size"})
del paper_model
display(HoverExplorer(paper))"""
PAPER_ROWS_CELL = ('np.save(f"{{OUTPUT_DIR}}/paper_rows.npy", '
                   'np.stack([paper.attention[pair][{cells}].astype(np.float32) for pair in paper.pairs]))')
INFERNO = np.rint(np.array(matplotlib.colormaps["inferno"].colors) * 255)
MAP_SIZE_JS = "root => { const canvas = root.querySelector('.dmtl-map canvas'); return [canvas.width, canvas.height]; }"
#: Every map canvas: its pair, what its frame shows (data-drawn-*) and its RGB at the given points.
SAMPLE_MAPS_JS = """(root, points) => [...root.querySelectorAll('.dmtl-map canvas')].map(canvas => {
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    const at = ([x, y]) => [...data.slice(4 * (y * canvas.width + x), 4 * (y * canvas.width + x) + 3)];
    return {...canvas.dataset, rgb: points.map(at)};
})"""
WAIT_FOR_TIMING_JS = "([root, kind, seen]) => root.hoverTimings.filter(entry => entry.kind === kind).length > seen"


def run_new_cell(page: Page, code: str, timeout_ms: int = RUN_TIMEOUT_MS) -> Locator:
    """Add a code cell at the end of the notebook, run it (Ctrl+Enter) and wait until it has run without an error."""
    page.locator(".jp-Notebook .jp-Cell").last.locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # command mode: a new cell below
    cell = page.locator(".jp-Notebook .jp-Cell").nth(page.locator(".jp-Notebook .jp-Cell").count() - 1)
    page.keyboard.press("Enter")
    page.keyboard.insert_text(code)
    page.keyboard.press("Control+Enter")
    expect(cell.locator(".jp-InputPrompt")).to_have_text(re.compile(r"\[\d+\]"), timeout=timeout_ms)
    errors = cell.locator("[data-mime-type='application/vnd.jupyter.stderr']", has_text="Traceback")
    assert errors.count() == 0, f"the added cell failed: {errors.first.inner_text()[-2000:]}"
    return cell


def hover_widget(cell: Locator) -> Locator:
    """The hover explorer in `cell`'s output, once its image has come from the kernel and is drawn."""
    widget = cell.locator(".dmtl-hover")
    expect(widget.locator(".dmtl-map canvas[data-drawn-cell]").first).to_be_attached(timeout=60_000)
    bring_into_view(widget.locator(".dmtl-image"))
    return widget


def timings(widget: Locator, kind: str) -> list[float]:
    """The page's measured redraws of `kind`, in ms (event timestamp to the end of the redraw)."""
    return [entry["ms"] for entry in widget.evaluate("root => root.hoverTimings") if entry["kind"] == kind]


def move_over(page: Page, widget: Locator, fx: float, fy: float, kind: str = "hover") -> None:
    """Move the mouse to (fx, fy) of the widget's image and wait until the page has redrawn (`kind`)."""
    box = widget.locator(".dmtl-image").bounding_box()
    seen = len(timings(widget, kind))
    page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    page.wait_for_function(WAIT_FOR_TIMING_JS, arg=[widget.element_handle(), kind, seen], timeout=20_000)


def expect_drawn(widget: Locator, what: str, value: str) -> None:
    """Wait until the frame the maps show has `what` (query, branch, scale, image, cell) equal to `value`."""
    expect(widget.locator(".dmtl-map canvas").first).to_have_attribute(f"data-drawn-{what}", value, timeout=30_000)


def drawn_query(widget: Locator) -> tuple[int, int]:
    """The query pixel (x, y) of the frame the maps show."""
    x, y = widget.locator(".dmtl-map canvas").first.get_attribute("data-drawn-query").split(",")
    return int(x), int(y)


def sample_points(canvas: tuple[int, int], values: tuple[int, int], cache: AttentionCache,
                  query: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Canvas pixels (px, py) that show value (row, column) of a map plainly: the pixel's centre lies well
    inside the value's block, away from the query cell's box and the query cross."""
    (width, height), (rows, columns) = canvas, values
    (image_h, image_w), (grid_h, grid_w) = cache.size, cache.grid
    cell_row, cell_column = query_cell(cache, *query)
    box = (cell_column * width / grid_w - 3, (cell_column + 1) * width / grid_w + 3,
           cell_row * height / grid_h - 3, (cell_row + 1) * height / grid_h + 3)
    cross = ((query[0] + 0.5) * width / image_w, (query[1] + 0.5) * height / image_h)
    points = []
    for row in range(rows):
        for column in range(columns):
            px, py = int((column + 0.5) * width / columns), int((row + 0.5) * height / rows)
            inside = ((px + 0.5) * columns / width - column, (py + 0.5) * rows / height - row)
            in_box = box[0] <= px <= box[1] and box[2] <= py <= box[3]
            near_cross = abs(px - cross[0]) <= 8 and abs(py - cross[1]) <= 8
            if all(0.2 < part < 0.8 for part in inside) and not in_box and not near_cross:
                points.append((px, py, row, column))
    return points


def assert_maps_show(widget: Locator, cache: AttentionCache, expected: dict[tuple[str, str], np.ndarray],
                     query: tuple[int, int], branch: str = "correlation", shared: bool = False) -> None:
    """Every pair's map shows `expected[pair]` through matplotlib's inferno, on its own range or one shared range.

    The drawn colours are read from the canvases and turned back into inferno levels (0-255); each must
    lie within one level of the expected value's level (two on the shared scale, whose levels the page
    computes from the uint8 codes).
    """
    cell_row, cell_column = query_cell(cache, *query)
    shape = next(iter(expected.values())).shape
    points = sample_points(tuple(widget.evaluate(MAP_SIZE_JS)), shape, cache, query)
    drawn = widget.evaluate(SAMPLE_MAPS_JS, [[px, py] for px, py, _, _ in points])
    assert len(drawn) == len(expected) == len(cache.pairs)
    everything = np.concatenate([values.ravel() for values in expected.values()])
    varied = 0
    for canvas in drawn:
        pair = (canvas["target"], canvas["source"])
        assert (canvas["drawnBranch"], canvas["drawnQuery"], canvas["drawnScale"]) == \
            (branch, f"{query[0]},{query[1]}", "shared" if shared else "map"), f"{pair} shows a stale frame"
        assert int(canvas["drawnCell"]) == cell_row * cache.grid[1] + cell_column
        values = np.array([expected[pair][row, column] for _, _, row, column in points], np.float64)
        low, high = (everything.min(), everything.max()) if shared else (expected[pair].min(), expected[pair].max())
        # a flat map (a query whose features are all zero attends uniformly) is drawn in the lowest colour
        levels = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        got = np.abs(np.array(canvas["rgb"], np.float64)[:, None, :] - INFERNO).sum(-1).argmin(-1)
        worst = np.abs(got - levels).max()
        assert worst <= (2 if shared else 1), f"{pair} at query {query}: drawn level off by {worst:.1f}"
        varied += np.ptp(levels) > 30
    assert varied >= len(drawn) // 2, f"at query {query} too few maps vary to tell one map from another"


def correlation_rows(cache: AttentionCache, query: tuple[int, int]) -> dict[tuple[str, str], np.ndarray]:
    """Each pair's attention row for `query`, on the grid: what the correlation maps should show."""
    row, column = query_cell(cache, *query)
    return {pair: cache.attention[pair][row * cache.grid[1] + column].reshape(cache.grid) for pair in cache.pairs}


def percentile_summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "median_ms": float(np.median(values)), "p95_ms": float(np.percentile(values, 95)),
            "max_ms": float(np.max(values))}


def test_notebook_05_hover_explorer_answers_the_mouse_in_the_page(page, lab_server, notebook_copy, kernel_outputs):
    measured: dict[str, object] = {}
    with artefacts_on_failure(page, lab_server, "05_hover"):
        open_notebook(page, lab_server, "05_attention_maps.ipynb")
        run_all_cells(page)
        notebook = save_and_read(page, notebook_copy / "05_attention_maps.ipynb")
        shipped = COURSE_ATTENTION.is_file()  # without it the course cells stop; cell-10 is what we test then
        upto = len(notebook.cells) if shipped else [cell.get("id") for cell in notebook.cells].index("cell-10") + 1
        assert_no_errors(nbformat.v4.new_notebook(cells=notebook.cells[:upto]))
        quick_cell = run_new_cell(page, QUICK_SIZE_CELL)
        learner_cache, *quick_caches = load_caches(kernel_outputs / "hover_caches.npz")[0]

        # cell-10: the learner's own model at the smoke size, three hovered queries read back
        learner = page.locator(".dmtl-hover").first
        bring_into_view(learner.locator(".dmtl-image"))
        for fx, fy in ((0.1, 0.2), (0.55, 0.6), (0.9, 0.85)):
            move_over(page, learner, fx, fy)
            assert_maps_show(learner, learner_cache, correlation_rows(learner_cache, drawn_query(learner)),
                             drawn_query(learner))
        if shipped:  # the course model's explorer (cell-course-5), on its first scene
            course = page.locator(".dmtl-hover").nth(1)
            bring_into_view(course.locator(".dmtl-image"))
            move_over(page, course, 0.3, 0.4)
            course_cache = load_caches()[0][0]
            assert_maps_show(course, course_cache, correlation_rows(course_cache, drawn_query(course)),
                             drawn_query(course))
            keep_screenshot(page, "05_hover_course")  # the README's picture of the explorer

        # the quick size: 50 mouse positions, each answered in the page; three read back
        quick = hover_widget(quick_cell)
        for move in range(HOVER_MOVES):
            move_over(page, quick, ((move * 7) % HOVER_MOVES + 0.5) / HOVER_MOVES,
                      ((move * 13) % HOVER_MOVES + 0.5) / HOVER_MOVES)
            if move in (10, 25, 40):
                query = drawn_query(quick)
                assert_maps_show(quick, quick_caches[0], correlation_rows(quick_caches[0], query), query)
        hovers = timings(quick, "hover")[-HOVER_MOVES:]
        measured["quick_64x128_hover"] = percentile_summary(hovers)
        keep_screenshot(page, "05_hover_explorer")

        # keys: a click pins, arrows move one cell, the mouse no longer moves it; b and s switch
        box = quick.locator(".dmtl-image").bounding_box()
        page.mouse.click(box["x"] + 0.3 * box["width"], box["y"] + 0.4 * box["height"])
        x, y = drawn_query(quick)
        for key in ("ArrowRight", "ArrowRight", "ArrowDown"):
            page.keyboard.press(key)
        expect_drawn(quick, "query", f"{x + 16},{y + 8}")  # one cell = 8 x 8 pixels at 64x128
        assert_maps_show(quick, quick_caches[0], correlation_rows(quick_caches[0], (x + 16, y + 8)), (x + 16, y + 8))
        seen = len(timings(quick, "hover"))
        page.mouse.move(box["x"] + 0.8 * box["width"], box["y"] + 0.2 * box["height"])
        page.wait_for_timeout(300)
        assert len(timings(quick, "hover")) == seen and drawn_query(quick) == (x + 16, y + 8), "a pinned query moved"
        page.keyboard.press("b")
        page.keyboard.press("s")
        expect_drawn(quick, "branch", "self_attention")
        expect_drawn(quick, "scale", "shared")
        assert_maps_show(quick, quick_caches[0], quick_caches[0].gate, (x + 16, y + 8), "self_attention", shared=True)
        for key in ("b", "b", "s", "Escape"):
            page.keyboard.press(key)
        expect_drawn(quick, "branch", "correlation")
        measured["quick_64x128_key"] = percentile_summary(timings(quick, "key"))

        # the strip: the second scene comes from the kernel once, then answers the mouse the same way
        quick.locator(".dmtl-strip canvas").nth(1).click()
        expect_drawn(quick, "image", "1")
        move_over(page, quick, 0.62, 0.37)
        assert_maps_show(quick, quick_caches[1], correlation_rows(quick_caches[1], drawn_query(quick)),
                         drawn_query(quick))

        # the paper's size: every position needs a row the page has not seen, asked of the kernel
        paper = hover_widget(run_new_cell(page, PAPER_SIZE_CELL, timeout_ms=300_000))
        for move in range(HOVER_MOVES):
            move_over(page, paper, (move + 0.5) / HOVER_MOVES, ((move * 17) % HOVER_MOVES + 0.5) / HOVER_MOVES,
                      kind="row")
        measured["paper_512x1024_row"] = percentile_summary(timings(paper, "row")[-HOVER_MOVES:])
        # the last frame drawn is the last row served: compare it with that row, as the kernel holds it
        paper_shape = AttentionCache("paper", np.zeros((512, 1024, 3), np.uint8), ("semseg", "depth", "normals"),
                                     (64, 128), {}, {}, {}, {}, {})
        query = drawn_query(paper)
        row, column = query_cell(paper_shape, *query)
        run_new_cell(page, PAPER_ROWS_CELL.format(cells=[row * 128 + column]))
        served = np.load(kernel_outputs / "paper_rows.npy")[:, 0]  # pairs, 8,192
        assert_maps_show(paper, paper_shape, {pair: served[p].reshape(64, 128)
                                              for p, pair in enumerate(paper_shape.pairs)}, query)

    # The timings are recorded, not asserted: speed goals live in docs/benchmarks.md, and a timed
    # assertion fails on a busy machine (the goals: median < 16 ms, p95 < 33 ms; a new row < 150 ms).
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "05_hover_timings.json").write_text(json.dumps(measured, indent=1))
    print(json.dumps(measured, indent=1))
    assert measured["quick_64x128_hover"]["n"] == measured["paper_512x1024_row"]["n"] == HOVER_MOVES, measured
