"""The UI over runs recorded by the real engine: `engine train` on the digits MLP, and a
model whose layer name is an XSS payload. Real browser, real OpenCL device (PoCL in CI)."""
import re

import pytest
from playwright.sync_api import expect

from ui_browser import Server, browser_page, screenshot, serve_with_browser
from ui_real_runs import train_digits_via_cli, train_hostile_names
from ui.runs import RunStore
from ui import create_app
from ui.layers import _match_scopes
from engine.examples import digits
from ui_fixtures import XSS


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = {"mlp": train_digits_via_cli(root, "mlp", epochs=2), "xss": train_hostile_names(root)}
    app = create_app(root)
    with serve_with_browser(app) as (url, browser):
        yield {"url": url, "runs": runs, "browser": browser, "client": app.test_client()}


@pytest.fixture
def page(site):
    with browser_page(site["browser"], 15000) as pg:
        yield pg


def test_api_of_recorded_digits_run(site):
    c, rid = site["client"], site["runs"]["mlp"]
    run = c.get(f"/api/runs/{rid}").get_json()
    assert run["status"] == "finished" and run["config"]["example"] == "digits"
    assert run["has_graph"] and run["has_kernels"] and run["has_weights"]
    m = c.get(f"/api/runs/{rid}/metrics").get_json()["metrics"]
    losses = [r["loss"] for r in m if r.get("loss") is not None]
    assert len(losses) >= 40 and losses[-1] < losses[0]  # it learned
    g = c.get(f"/api/runs/{rid}/graph").get_json()
    ids = {n["id"] for n in g["nodes"]}
    assert g["kernels"] and all(set(k["fused_ops"]) <= ids for k in g["kernels"])
    assert all("__kernel" in k["source"] for k in g["kernels"])
    ks = c.get(f"/api/runs/{rid}/kernels").get_json()["kernels"]
    assert ks and all(k["time_ns"] is not None and k["time_ns"] >= 0 for k in ks)


def test_layers_api_activations_match_a_forward_pass(site):
    c, rid = site["client"], site["runs"]["mlp"]
    r = c.get(f"/api/runs/{rid}/layers?sample=5").get_json()
    assert r["activations_error"] is None and r["input"]["shape"] == [1, 8, 8]
    assert 0 <= r["input"]["prediction"] <= 9 and r["input"]["label"] == int(digits.load_digits()[3][5])
    layers = {lay["name"]: lay for lay in r["layers"]}
    assert list(layers)[:6] == ["flatten", "fc1", "relu1", "fc2", "relu2", "out"]
    assert layers["fc1"]["param_count"] == 64 * 128 + 128
    assert layers["relu1"]["activation"]["stats"]["min"] >= 0  # a ReLU output
    assert layers["out"]["activation"]["shape"] == [1, 10] and len(layers["out"]["activation"]["values"]) == 10
    assert {"MATMUL", "ADD"} <= {o["op"] for o in layers["fc1"]["ops"]}  # graph scopes matched
    assert c.get(f"/api/runs/{rid}/layers?sample=100000").status_code == 400


def test_scope_prefix_matching():
    assert _match_scopes(["Sequential.fc1", "Sequential.relu", ""], {"fc1"}) == {
        "Sequential.fc1": "fc1", "Sequential.relu": "relu", "": ""}
    assert _match_scopes(["net.0", XSS], {"net.0"}) == {"net.0": "net.0", XSS: XSS}


def test_pages_of_recorded_digits_run(site, page):
    base, rid = site["url"], site["runs"]["mlp"]
    page.goto(f"{base}/runs/{rid}")
    expect(page.locator("#run-status")).to_have_text("finished")
    # the status comes with the page; the curves are drawn once run.js has fetched them
    expect(page.locator("#plot-accuracy")).to_have_attribute("data-points", re.compile(r"^[1-9]"))
    assert int(page.locator("#plot-loss").get_attribute("data-points")) >= 40
    assert int(page.locator("#plot-accuracy").get_attribute("data-points")) == 2  # per epoch
    expect(page.locator("#kernels tbody tr").nth(5)).to_be_attached()
    screenshot(page, "real-run")
    link = page.locator("#kernels .kernel-link").nth(1)
    name = link.inner_text()
    link.click()
    expect(page.locator("#kd-name")).to_contain_text(name)  # the graph page opens on it

    page.goto(f"{base}/runs/{rid}/graph")
    expect(page.locator("body")).to_have_attribute("data-ready", "1")
    first = page.locator("#graph .kernel").first
    index = first.get_attribute("data-kernel")
    first.locator(".klabel").click()
    expect(page.locator("#kd-source")).to_contain_text("__kernel void")
    expect(page.locator("#kd-facts")).to_contain_text("µs")  # measured by the profile
    screenshot(page, "real-graph")
    # a kernel that fuses a matmul with its epilogue, if the scheduler made one
    page.locator("#layer-list .klink").last.click()
    expect(page.locator("#kd-name")).not_to_have_text(f"kernel {index}:")
    screenshot(page, "real-graph-2")

    page.goto(f"{base}/runs/{rid}/layers?sample=5")
    expect(page.locator("body")).to_have_attribute("data-ready", "1")
    expect(page.locator("#layers-error")).to_be_hidden()
    expect(page.locator('.layer-card[data-layer="fc1"] .card')).to_have_count(3)  # bias, weight, activation
    assert page.locator("#input-view svg.heat rect").count() == 64
    page.fill("#sample", "7")
    page.click("#sample-form button")
    expect(page).to_have_url(f"{base}/runs/{rid}/layers?sample=7")
    screenshot(page, "real-layers")
    page.watch.assert_clean()


def test_hostile_layer_name_is_text_everywhere(site, page):
    base, rid = site["url"], site["runs"]["xss"]
    for path, sel in [("/runs", ".run-link"), (f"/runs/{rid}", "#run-name"),
                      (f"/runs/{rid}/graph", "#layer-list"), (f"/runs/{rid}/layers", "#layers")]:
        page.goto(base + path)
        expect(page.locator(sel).filter(has_text=XSS).first).to_be_visible()
        assert page.locator("main script").count() == 0
    expect(page.locator(f'.layer-card[data-layer="{XSS}"] .layer-name')).to_have_text(XSS)
    expect(page.locator("#layers-error")).to_contain_text("known examples only")
    screenshot(page, "xss-layers")
    page.goto(f"{base}/runs/{rid}/graph")
    expect(page.locator("body")).to_have_attribute("data-ready", "1")
    page.locator("#graph .op").filter(has_text="MATMUL").first.click()
    expect(page.locator("#kd-ops")).to_contain_text(XSS)
    screenshot(page, "xss-graph")
    page.watch.assert_clean()


def test_kernel_view_of_cnn_training_graph(site, page, tmp_path):
    # the CNN's forward+backward graph is big: the page opens in the compact kernel view
    rid = train_digits_via_cli(tmp_path, "cnn", epochs=1)
    srv = Server(create_app(tmp_path))
    try:
        page.goto(f"{srv.url}/runs/{rid}/graph")
        expect(page.locator("body")).to_have_attribute("data-ready", "1")
        expect(page.locator("#graph-view")).to_have_value("kernels")
        n_kernels = len(RunStore(tmp_path).graph(rid)["kernels"])
        expect(page.locator("#graph .kernel.compact")).to_have_count(n_kernels)
        assert page.locator("#graph path.edge").count() >= n_kernels - 1  # connected, roughly a chain
        page.locator('#graph .kernel[data-kernel="3"]').click()
        expect(page.locator("#kd-name")).to_have_text(re.compile(r"^kernel 3: "))
        expect(page.locator("#kd-source")).to_contain_text("__kernel void")
        screenshot(page, "cnn-kernels")
        page.select_option("#graph-view", "ops")
        expect(page.locator('#graph .kernel.selected[data-kernel="3"]')).to_have_count(1)
        assert page.locator("#graph .op").count() > 200
        page.watch.assert_clean()
    finally:
        srv.close()
