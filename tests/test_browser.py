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
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import nbformat
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Locator, Page, expect, sync_playwright

from densemtl_lab.labserver import LabOptions, LabServer, group_alive, pid_alive, start_lab

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
def kernel_outputs(tmp_path_factory) -> Path:
    """The kernels' OUTPUT_DIR: checkpoints and each notebook's metrics.json."""
    return tmp_path_factory.mktemp("outputs")


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
        slider = page.locator(".widget-hslider", has=page.get_by_text(QUERY_SLIDER, exact=True))
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
