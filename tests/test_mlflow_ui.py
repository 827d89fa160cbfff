"""The MLflow UI in a real browser: `mlflow server` over the store a tiny `dvc repro` filled,
driven by Debian's Chromium through Playwright. Screenshots land in test-artifacts/browser/."""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

import tinyrepo
from conftest import CHROMIUM, SHOTS
from emoprune.pipeline import tracking
from servers import mlflow_server

# One xdist worker runs every test of the shared `pipeline` repo, in file order (some count
# the runs that earlier ones added).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("pipeline")]

TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def ui(pipeline, tmp_path_factory):
    """(base URL, client, experiment id) of a server over the pipeline's sqlite store."""
    repo, _, _ = pipeline
    log = tmp_path_factory.mktemp("ui") / "server.log"
    with mlflow_server(f"sqlite:///{repo}/mlflow.db", repo / "mlartifacts", log) as url:
        mlflow.set_tracking_uri(f"sqlite:///{repo}/mlflow.db")
        client = MlflowClient()
        yield url, client, client.get_experiment_by_name("emoprune").experiment_id


@pytest.fixture
def page(browser, request):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{request.node.name}.png"))
    page.close()


def _finished(client, exp_id: str, stage: str):
    return client.search_runs(
        [exp_id],
        f"tags.`dvc.stage` = '{stage}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]


def test_experiment_page_lists_the_stage_runs_by_name(ui, page):
    url, client, exp_id = ui
    # A pipeline run whose children are all eight stages (a full repro).
    parent = next(
        p
        for p in client.search_runs(
            [exp_id], "tags.`emoprune.role` = 'pipeline'", order_by=["attributes.start_time DESC"]
        )
        if {
            r.data.tags["dvc.stage"]
            for r in client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{p.info.run_id}'")
        }
        >= set(tinyrepo.LOGGED_STAGES)
    )
    page.goto(f"{url}/#/experiments/{exp_id}/runs")
    row = page.locator(f"[role=row][row-id='{parent.info.run_id}']")
    # Stage runs are nested: expand the pipeline run, as a user clicks its [+].
    row.locator("button").first.click()
    for stage in tinyrepo.LOGGED_STAGES:
        cell = page.locator("[role=row] a", has_text=stage).first
        cell.wait_for()
        # The stage's name, and for prune_cnn its threshold (the repro's own: no experiment).
        assert cell.inner_text().strip() == ("prune_cnn t=25" if stage == "prune_cnn" else stage)


def test_prune_cnn_metric_page_draws_the_angle_trace(ui, page):
    url, client, exp_id = ui
    run = _finished(client, exp_id, "prune_cnn")
    metric = "fold0/fc2/min_angle"
    assert client.get_metric_history(run.info.run_id, metric)
    # The route the UI itself builds when a metric name is clicked on the run page.
    query = {
        "runs": json.dumps([run.info.run_id]),
        "metric": json.dumps(metric),
        "experiments": json.dumps([exp_id]),
        "plot_metric_keys": json.dumps([metric]),
        "plot_layout": "{}",
        "x_axis": "step",
        "y_axis_scale": "linear",
        "line_smoothness": "1",
        "show_point": "false",
        "deselected_curves": "[]",
        "last_linear_y_axis_range": "[]",
    }
    page.goto(f"{url}/#/metric?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}")
    line = page.locator(".scatterlayer path.js-line").first
    line.wait_for()
    assert line.get_attribute("d").count(",") >= 2  # a drawn curve, not an empty frame
    assert page.get_by_text(metric).count() >= 1
    assert page.get_by_text("Error").count() == 0


def test_evaluate_artifacts_show_the_confusion_matrix(ui, page):
    url, client, exp_id = ui
    run = _finished(client, exp_id, "evaluate")
    path = "evaluate/plots/confusion_cnn.png"
    page.goto(f"{url}/#/experiments/{exp_id}/runs/{run.info.run_id}/artifacts/{path}")
    page.get_by_text("confusion_cnn.png", exact=True).first.wait_for()
    image = page.locator(f"img[alt='{path}']").first
    image.wait_for()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
    )
    assert image.evaluate("img => img.naturalWidth") > 100  # the PNG itself, decoded


def test_the_experiment_opens_on_its_training_runs(ui, page, pipeline):
    url, client, exp_id = ui
    repo, _, _ = pipeline
    # The link `make ui` prints: MLflow 3.17 picks the page from the workflow switch, not from
    # the experiment's mlflow.experimentKind tag (which is set too, for UIs that read it).
    link = tracking.ui_link(url, "emoprune", root=repo)
    assert link == f"{url}/#/experiments/{exp_id}?{tracking.TRAINING_VIEW}"
    assert client.get_experiment(exp_id).tags[tracking.KIND_TAG] == tracking.TRAINING_KIND
    page.goto(link)
    parent = client.search_runs(
        [exp_id], "tags.`emoprune.role` = 'pipeline'", order_by=["attributes.start_time ASC"]
    )[0]
    page.locator(f"[role=row][row-id='{parent.info.run_id}']").first.wait_for()  # runs table
    assert "/overview" not in page.url and page.get_by_text("Detect Issues").count() == 0
    page.get_by_text("dvc.yaml").first.wait_for()  # the Source column, from MLflow's own tags


def test_a_training_run_page_lists_its_datasets(ui, page):
    url, client, exp_id = ui
    run = _finished(client, exp_id, "train_cnn")
    digest = run.inputs.dataset_inputs[0].dataset.digest
    page.goto(f"{url}/#/experiments/{exp_id}/runs/{run.info.run_id}")
    page.get_by_text("Datasets", exact=True).first.wait_for()
    names = {i.dataset.name for i in run.inputs.dataset_inputs}
    shown = page.get_by_text(f"({digest})").first
    shown.wait_for()
    assert shown.inner_text().split(" (")[0] in names  # e.g. "data/raw fold0 train (<hash>)"
    assert page.get_by_text(re.compile(r"^training$", re.IGNORECASE)).count() >= 1  # context


def test_the_registered_model_page_shows_versions_aliases_and_lineage(ui, page):
    url, client, exp_id = ui
    version = client.get_model_version_by_alias("emoprune-pruned-cnn", "workspace")
    page.goto(f"{url}/#/models/emoprune-pruned-cnn")
    page.get_by_text(f"Version {version.version}", exact=True).first.wait_for()
    page.get_by_text(re.compile(r"^@\s*workspace$")).first.wait_for()  # the alias
    assert page.get_by_text("shrunk to its live units").count() == 1  # the description
    # The version's page links the training run that produced the weights, and its tags.
    page.goto(f"{url}/#/models/emoprune-pruned-cnn/versions/{version.version}")
    source = client.get_run(version.run_id).info.run_name
    page.get_by_role("link", name=source).first.wait_for()
    page.get_by_text("emoprune.checkpoint_sha256").first.wait_for()


def test_screenshots_are_saved():
    # Runs after the page tests of this module (pytest keeps file order).
    shots = sorted(p.name for p in Path(SHOTS).glob("test_*.png"))
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("no browser, no screenshots")
    assert "test_evaluate_artifacts_show_the_confusion_matrix.png" in shots
