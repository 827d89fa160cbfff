"""`dvc plots show` drawn offline: every plot dvc.yaml declares, in Chromium with no network.

The page is rendered from the tiny pipeline's reports with the template `make plots` builds
(Vega, Vega-Lite and vega-embed inline), and opened from disk in a browser context that has no
network and refuses every request that is not a local file. DVC's default page is the control:
offline it draws none of the Vega plots.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import tinyrepo
from conftest import REPO, SHOTS
from emoprune.plots_page import build_template

# One xdist worker runs every test of the shared `pipeline` repo, in file order (some count
# the runs that earlier ones added).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("pipeline")]

NODE_MODULES = REPO / "plots" / "node_modules"
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """plots/template.html as `make plots` builds it (npm ci first, when not yet installed)."""
    if not (NODE_MODULES / ".package-lock.json").exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is missing: `make plots` needs Node.js's npm for vega")
        proc = subprocess.run(
            ["npm", "ci", "--prefix", "plots", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode:
            pytest.skip(f"npm ci failed (no npm registry?): {proc.stderr.strip()[-300:]}")
    path = tmp_path_factory.mktemp("plots") / "template.html"
    path.write_text(build_template(NODE_MODULES))
    return path


def declared_plots(repo: Path) -> dict[str, str]:
    """{plot id: "vega" | "image"} for every plot `dvc plots show --json` finds."""
    shown = json.loads(tinyrepo.run(repo, "dvc", "plots", "show", "--json").stdout)
    assert not shown.get("errors"), shown["errors"]
    return {pid: entries[0]["type"] for pid, entries in shown["data"].items()}


def render(repo: Path, out: Path, *template: str) -> Path:
    tinyrepo.run(repo, "dvc", "plots", "show", "-o", str(out), *template)
    return out / "index.html"


def open_offline(browser, page_file: Path, shot: str):
    """The page from disk with no network; returns (drawn vega ids, images, refused URLs)."""
    context = browser.new_context(offline=True, viewport={"width": 1400, "height": 1000})
    refused: list[str] = []

    def guard(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    page.goto(page_file.as_uri(), wait_until="load", timeout=TIMEOUT_MS)
    # The Vega plots are the divs DVC's page hands to vegaEmbed (which then replaces their
    # content with a canvas, when it can run).
    body = page_file.read_text().split("<body>", 1)[-1]
    vega = re.findall(r"vegaEmbed\('#([^']+)'", body)
    drawn_js = """ids => ids.filter(id => [...document.getElementById(id)
        .querySelectorAll('canvas, svg')].some(c => c.getBoundingClientRect().width > 50))"""
    try:  # vegaEmbed draws asynchronously
        page.wait_for_function(
            f"ids => ({drawn_js})(ids).length == ids.length", arg=vega, timeout=10_000
        )
    except Exception:
        pass  # judged below, plot by plot
    drawn = page.evaluate(drawn_js, vega)
    images = page.eval_on_selector_all(
        "img", "imgs => imgs.map(i => [i.getAttribute('src'), i.complete && i.naturalWidth])"
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / shot), full_page=True)
    context.close()
    return set(vega), set(drawn), images, refused


def test_every_declared_plot_draws_offline(pipeline, template, browser, tmp_path):
    repo, _, _ = pipeline
    declared = declared_plots(repo)
    n_vega = sum(t == "vega" for t in declared.values())
    n_images = sum(t == "image" for t in declared.values())
    # One Vega plot per traced layer and per ResNet arch: the folders follow the params.
    assert {"reports/prune_cnn/angles/fc2.tsv", "reports/finetune_resnet/epochs/resnet18.tsv"} <= (
        set(declared)
    )
    vega, drawn, images, refused = open_offline(
        browser, render(repo, tmp_path / "offline", "--html-template", str(template)), "plots.png"
    )
    assert len(vega) == n_vega >= 8 and drawn == vega, sorted(vega - drawn)
    assert len(images) == n_images and all(width for _, width in images), images
    assert refused == []


def test_dvc_default_page_draws_no_vega_plot_offline(pipeline, browser, tmp_path):
    """The control: the page DVC writes by default needs its CDN."""
    repo, _, _ = pipeline
    vega, drawn, _, refused = open_offline(
        browser, render(repo, tmp_path / "cdn"), "plots_default_offline.png"
    )
    assert vega and not drawn
    assert any("cdn.jsdelivr.net" in url for url in refused)
