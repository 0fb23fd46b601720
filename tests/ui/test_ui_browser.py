"""Real-browser tests of every page against a recorded run (fixture-shaped data)."""
import pytest
from playwright.sync_api import expect

from ui_browser import browser_page, chromium_path, screenshot, serve_with_browser
from engine.runs import RunRecorder
from ui import create_app
from ui.nodes import NodeSource
from ui_fixtures import fixture_nodes, XSS, record_fixture_run


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run_id = record_fixture_run(root, name=f"mlp {XSS}")
    live = RunRecorder.create(root, "live run", {"example": "fixture"})
    live.log_metrics(0, 0, loss=2.0, accuracy=0.1)
    with serve_with_browser(create_app(root, node_source=NodeSource(fixture_nodes, "test node list"))) as (url, browser):
        yield {"url": url, "run": run_id, "live": live, "browser": browser}
    live.close()


@pytest.fixture
def page(site):
    with browser_page(site["browser"], 10000) as pg:
        yield pg


def test_runs_page_lists_run_with_escaped_name(site, page):
    page.goto(site["url"] + "/runs")
    row = page.locator(f'tr[data-run-id="{site["run"]}"]')
    expect(row.locator(".run-link")).to_have_text(f"mlp {XSS}")
    expect(row.locator(".status")).to_have_text("finished")
    screenshot(page, "runs")
    page.watch.assert_clean()


def test_run_page_plots_points_and_kernels(site, page):
    page.goto(f'{site["url"]}/runs/{site["run"]}')
    expect(page.locator("#plot-loss")).to_have_attribute("data-points", "30")
    assert page.locator("#plot-loss polyline").count() == 1
    expect(page.locator("#plot-accuracy")).to_have_attribute("data-points", "30")
    expect(page.locator("#kernels tbody tr")).to_have_count(3)
    expect(page.locator("#kernels tbody tr").first).to_contain_text("k0_matmul_bias_relu")
    expect(page.locator("#kernels tbody tr").first).to_contain_text("75.9 %")  # 12000 / 15800
    screenshot(page, "run")
    page.watch.assert_clean()


def test_run_page_updates_live(site, page):
    live = site["live"]
    page.goto(f'{site["url"]}/runs/{live.run_id}')
    expect(page.locator("#plot-loss")).to_have_attribute("data-points", "1")
    for s in range(1, 6):
        live.log_metrics(s, 0, loss=2.0 / (s + 1), accuracy=0.1 * s)
    expect(page.locator("#plot-loss")).to_have_attribute("data-points", "6", timeout=8000)
    expect(page.locator("#run-status")).to_have_text("running")
    page.watch.assert_clean()


def test_graph_page_click_kernel_shows_source(site, page):
    page.goto(f'{site["url"]}/runs/{site["run"]}/graph')
    expect(page.locator("body")).to_have_attribute("data-ready", "1")
    assert page.locator("#graph .op").count() == 10
    assert page.locator("#graph .kernel").count() == 3
    expect(page.locator("#kernel-detail")).to_be_hidden()
    expect(page.locator("#layer-list")).to_contain_text(XSS)  # shown as text
    page.locator('#graph .kernel[data-kernel="0"] .klabel').click()
    detail = page.locator("#kernel-detail")
    expect(detail).to_be_visible()
    expect(page.locator("#kd-name")).to_have_text("kernel 0: k0_matmul_bias_relu")
    src = page.locator("#kd-source")
    expect(src).to_contain_text("if (gid < N) {  /* '<' and '&&' must reach the page as text */")
    assert src.locator(".hljs-keyword").count() > 0  # highlighted by the vendored highlight.js
    expect(detail).to_contain_text("gemm.cl.mako")
    expect(detail).to_contain_text("[32]")
    expect(detail).to_contain_text("12.0 µs")
    expect(page.locator("#kd-params")).to_contain_text(XSS)
    screenshot(page, "graph")
    # clicking an op selects its kernel
    page.locator('#graph .op[data-node="7"] rect').click()
    expect(page.locator("#kd-name")).to_have_text("kernel 1: k1_matmul")
    page.watch.assert_clean()


def test_layers_page(site, page):
    page.goto(f'{site["url"]}/runs/{site["run"]}/layers')
    expect(page.locator("body")).to_have_attribute("data-ready", "1")
    expect(page.locator(".layer-card .layer-name")).to_contain_text(["net.0", XSS, "net.2"])
    expect(page.locator("#layers-error")).to_contain_text("no weights")
    screenshot(page, "layers-fixture")
    page.watch.assert_clean()


def test_nodes_page(site, page):
    page.goto(site["url"] + "/nodes")
    rows = page.locator("#nodes tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("80.0 %")
    expect(rows.nth(0)).to_contain_text("9.50 GB/s")
    expect(rows.nth(1).locator("td").first).to_have_text(XSS)
    expect(page.locator("#nodes-source")).to_have_text("test node list")
    screenshot(page, "nodes")
    page.watch.assert_clean()


def test_unknown_run_page_is_404(site, page):
    resp = page.goto(site["url"] + "/runs/does-not-exist")
    assert resp.status == 404
    expect(page.locator("main")).to_contain_text("unknown run")
    # the one expected error is the 404 of the document itself
    assert all("404" in e for e in page.watch.errors) and len(page.watch.errors) <= 1
    assert page.watch.dialogs == []


def test_missing_chromium_fails_loudly(monkeypatch, tmp_path):
    monkeypatch.setenv("ENGINE_CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(pytest.fail.Exception, match="chromium not found"):
        chromium_path()
