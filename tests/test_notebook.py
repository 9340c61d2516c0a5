"""The explorer as a notebook widget, in a real JupyterLab started here and driven by
Playwright in Debian's Chromium: the cell runs, the map draws, a lasso on the page changes
the kernel's ``.selection``, and ``.select`` and ``.colour_by`` from the kernel change the
page."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("anywidget")
pytest.importorskip("jupyterlab")
pytest.importorskip("pandas")

from tests.test_explore import columned_store  # noqa: E402
from tests.test_explore_page import CHROMIUM, headless_chromium, lasso_drag  # noqa: E402

pytestmark = pytest.mark.slow

if CHROMIUM is None:  # pragma: no cover - the page tests skip the module the same way
    pytest.skip("Chromium is not installed", allow_module_level=True)


@contextlib.contextmanager
def jupyterlab(root: Path):
    """``jupyter lab`` serving ``root`` on a free loopback port, in a session of its own
    (it and its kernels end with the block); yields its base URL and token."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = os.urandom(8).hex()
    log = root / "jupyterlab.log"
    env = os.environ | {
        "JUPYTER_CONFIG_DIR": str(root / ".jupyter"),
        "JUPYTER_RUNTIME_DIR": str(root / ".runtime"),
        "IPYTHONDIR": str(root / ".ipython"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
         "--ip=127.0.0.1", f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}",
         "--allow-root", "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"),
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError(log.read_text()[-2000:])
                time.sleep(0.3)
        yield url, token
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # its kernels
            os.killpg(proc.pid, signal.SIGKILL)


def _notebook(path: Path, cells: list[str]) -> None:
    path.write_text(
        json.dumps(
            {
                "cells": [
                    {
                        "cell_type": "code",
                        "metadata": {},
                        "source": c,
                        "outputs": [],
                        "execution_count": None,
                    }
                    for c in cells
                ],  # fmt: skip
                "metadata": {
                    "kernelspec": {
                        "name": "python3",
                        "display_name": "Python 3",
                        "language": "python",
                    }
                },  # fmt: skip
                "nbformat": 4,
                "nbformat_minor": 5,
            }
        )
    )


def _explorer_frame(page, shot: Path):
    """The widget's iframe, once its page is ready (else a screenshot at ``shot``)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            frame = page.locator(".jp-OutputArea iframe").first.element_handle().content_frame()
            if frame.evaluate("() => Boolean(window.vaefastExplorer && vaefastExplorer.ready)"):
                return frame
        except Exception:  # not shown yet, or replaced by the notebook meanwhile
            pass
        time.sleep(0.3)
    page.screenshot(path=str(shot))
    outputs = page.locator(".jp-OutputArea").all_inner_texts()
    raise AssertionError(f"the widget's page never became ready ({shot}): {outputs}")


def _run_cell(page, index: int) -> None:
    """Run cell ``index`` as a user does (click it, Shift+Enter), again if the kernel was
    not listening yet."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    for _ in range(5):
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
        deadline = time.time() + 20
        while time.time() < deadline:
            if cell.locator(".jp-InputPrompt").inner_text().strip() not in ("[ ]:", ""):
                return
            time.sleep(0.2)
    raise AssertionError(f"cell {index} never ran")


@pytest.mark.parametrize("ui", ["lab/tree", "notebooks"])  # JupyterLab, Notebook 7
def test_the_widget_in_jupyter_draws_and_syncs_the_selection_both_ways(ui, tmp_path):
    if ui == "notebooks":
        pytest.importorskip("notebook")
    store, table = columned_store(tmp_path)
    sync = tmp_path / "selected.json"
    _notebook(
        tmp_path / "explore.ipynb",
        [
            "import json, pathlib\n"
            "from vaefast.explore import widget\n"
            f"w = widget('mnist5k-z20', {str(store)!r}, providers='cpu', height=560)\n"
            "def saved(change):\n"
            "    frame = w.selection\n"
            f"    pathlib.Path({str(sync)!r}).write_text(json.dumps(\n"
            "        {'selected': change['new'], 'rows': frame['row'].tolist(),\n"
            "         'splits': frame['split'].tolist(), 'z': len(frame['mu'][0])}))\n"
            "w.observe(saved, names='selected')\n"
            "w",
            "w.select([0, 4, 8])\nw.colour_by([str(r % 3) for r in range(120)], name='mod3')",
        ],
    )
    with jupyterlab(tmp_path) as (url, token), headless_chromium() as browser:
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        # a modal of Jupyter's own once blocked the first cell's click under a loaded
        # suite: cancelled (Escape) and its text printed, shown if the test then fails
        page.add_locator_handler(
            page.locator(".jp-Dialog"),
            lambda dialog: (
                print("Jupyter's dialog, cancelled:", dialog.inner_text()),
                page.keyboard.press("Escape"),
            ),
        )
        page.goto(f"{url}/{ui}/explore.ipynb?token={token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        _run_cell(page, 0)
        frame = _explorer_frame(page, tmp_path / "notebook.png")
        assert frame.evaluate("vaefastExplorer.error") is None
        assert frame.evaluate("vaefastExplorer.points") == table.num_rows
        shot = np.asarray(Image.open(io.BytesIO(frame.locator("#map").screenshot())))
        shot = shot[..., :3].astype(int)
        assert (np.abs(shot - shot[0, 0]).sum(-1) > 60).sum() > 100  # points drawn

        box = frame.locator("#map").bounding_box()  # in the page's coordinates
        x, y = frame.evaluate("vaefastExplorer.scatterplot.getScreenPosition(7)")
        page.mouse.move(box["x"] + x, box["y"] + y)  # a hover's images, relayed as well
        frame.wait_for_function("vaefastExplorer.tooltipComplete")
        assert frame.evaluate("document.querySelector('#tip-recon').naturalWidth") == 28
        assert frame.evaluate("document.querySelector('#tip-input').naturalWidth") == 28
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        lasso_drag(page, [(cx - 140, cy - 120), (cx + 140, cy - 120), (cx + 140, cy + 120),
                          (cx - 140, cy + 120)])  # fmt: skip
        frame.wait_for_function("vaefastExplorer.selection.length > 0")
        on_page = sorted(frame.evaluate("vaefastExplorer.selection"))
        deadline = time.time() + 30
        while not (sync.exists() and json.loads(sync.read_text())["selected"] == on_page):
            assert time.time() < deadline, "the kernel never saw the lasso's selection"
            time.sleep(0.2)
        got = json.loads(sync.read_text())
        assert got["rows"] == on_page and got["z"] == 20
        assert got["splits"] == ["test" if r % 4 == 0 else "train" for r in on_page]

        _run_cell(page, 1)  # w.select([0, 4, 8]): the page follows the kernel
        frame.wait_for_function("vaefastExplorer.selection.join() === '0,4,8'", timeout=30_000)
        frame.wait_for_function(
            "document.querySelector('#sel-count').textContent.startsWith('3 selected')"
        )
        frame.wait_for_function("vaefastExplorer.colour === 'col:mod3'")  # an array coloured
        frame.wait_for_function("document.querySelector('#legend').textContent.includes('2')")
        z = frame.evaluate("Array.from(vaefastExplorer.scatterplot.get('points'), p => p[2])")
        rows = frame.evaluate("Array.from(vaefastExplorer.rows)")
        assert z == [r % 3 for r in rows]
