"""JSON API and page responses through Flask's test client (no browser, no device)."""
import json

import pytest

from ui import create_app, main
from ui_fixtures import XSS, explain_dict


def test_runs_list_and_detail(client, fixture_run):
    runs = client.get("/api/runs").get_json()["runs"]
    assert [r["id"] for r in runs] == [fixture_run]
    r = client.get(f"/api/runs/{fixture_run}").get_json()
    assert r["status"] == "finished" and r["has_graph"] and r["has_kernels"]
    assert r["last_step"] == 29


def test_metrics_and_since(client, fixture_run):
    m = client.get(f"/api/runs/{fixture_run}/metrics").get_json()
    assert m["status"] == "finished" and len(m["metrics"]) == 30
    assert m["metrics"][0]["loss"] > m["metrics"][-1]["loss"]
    tail = client.get(f"/api/runs/{fixture_run}/metrics?since=27").get_json()["metrics"]
    assert [r["step"] for r in tail] == [28, 29]


def test_graph_and_kernels(client, fixture_run):
    assert client.get(f"/api/runs/{fixture_run}/graph").get_json() == explain_dict()
    ks = client.get(f"/api/runs/{fixture_run}/kernels").get_json()["kernels"]
    assert ks[0]["name"] == "k0_matmul_bias_relu" and ks[0]["time_ns"] == 12000


def test_layers_without_weights_explains_why(client, fixture_run):
    r = client.get(f"/api/runs/{fixture_run}/layers").get_json()
    names = [layer["name"] for layer in r["layers"]]
    assert "net.0" in names and XSS in names and "net.2" in names
    net0 = r["layers"][names.index("net.0")]
    assert [o["op"] for o in net0["ops"]] == ["buffer", "buffer", "matmul", "add"]
    assert net0["kernels"] == [0]
    assert r["activations_error"] == "run has no weights recorded"


@pytest.mark.parametrize("url", ["/api/runs/nope", "/api/runs/nope/metrics", "/api/runs/nope/graph",
                                 "/api/runs/nope/kernels", "/api/runs/nope/layers",
                                 "/api/runs/..%2F..%2Fetc/graph", "/api/nothing-here"])
def test_unknown_is_404_json(client, url):
    resp = client.get(url)
    assert resp.status_code == 404 and resp.is_json
    body = resp.get_json()
    assert body["status"] == 404 and body["message"]


def test_unknown_run_message_names_it(client):
    body = client.get("/api/runs/nope").get_json()
    assert "nope" in body["message"] and "/api/runs" in body["message"]


@pytest.mark.parametrize("query", ["since=abc", "since=-5", "since=1.5"])
def test_bad_metrics_params_are_400(client, fixture_run, query):
    resp = client.get(f"/api/runs/{fixture_run}/metrics?{query}")
    assert resp.status_code == 400 and "since" in resp.get_json()["message"]


@pytest.mark.parametrize("query", ["sample=x", "sample=-1", "sample=99999999"])
def test_bad_layers_params_are_400(client, fixture_run, query):
    resp = client.get(f"/api/runs/{fixture_run}/layers?{query}")
    assert resp.status_code == 400 and "sample" in resp.get_json()["message"]


def test_run_without_graph_is_404_with_reason(runs_root, client):
    from engine.runs import RunRecorder
    rec = RunRecorder.create(runs_root, "bare", {})
    resp = client.get(f"/api/runs/{rec.run_id}/graph")
    assert resp.status_code == 404 and "log_graph" in resp.get_json()["message"]
    rec.close()


def test_note_needs_token(client, fixture_run):
    url = f"/api/runs/{fixture_run}/note"
    assert client.post(url, json={"note": "hi"}).status_code == 401
    assert client.post(url, json={"note": "hi"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.post(url, json={"note": "hi"}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.get_json()["note"] == "hi"
    bad = client.post(url, data="x", headers={"Authorization": "Bearer s3cret"})
    assert bad.status_code == 400
    assert client.get(f"/api/runs/{fixture_run}").get_json()["note"] == "hi"


def test_no_token_configured_means_read_only(runs_root, fixture_run):
    c = create_app(runs_root).test_client()
    resp = c.post(f"/api/runs/{fixture_run}/note", json={"note": "x"}, headers={"Authorization": "Bearer "})
    assert resp.status_code == 401
    assert c.put(f"/api/runs/{fixture_run}").status_code == 405


def test_nodes_api(client):
    r = client.get("/api/nodes").get_json()
    assert r["source"] == "test node list" and r["error"] is None
    assert r["nodes"][0]["share"] == 0.8 and 0 <= r["nodes"][0]["heartbeat_age_s"] < 60


def test_nodes_default_reads_json_file_and_survives_garbage(runs_root, fixture_run):
    c = create_app(runs_root).test_client()
    assert c.get("/api/nodes").get_json()["nodes"] == []
    (runs_root / "nodes.json").write_text(json.dumps({"nodes": [{"address": "a", "state": "ready"}]}))
    assert c.get("/api/nodes").get_json()["nodes"][0]["state"] == "ready"
    (runs_root / "nodes.json").write_text("{not json")
    r = c.get("/api/nodes")
    assert r.status_code == 200 and "JSONDecodeError" in r.get_json()["error"]


def test_pages_render_and_escape(client, fixture_run):
    for url in ["/runs", f"/runs/{fixture_run}", f"/runs/{fixture_run}/graph",
                f"/runs/{fixture_run}/layers", "/nodes"]:
        resp = client.get(url)
        assert resp.status_code == 200, url
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert client.get("/").status_code == 302
    resp = client.get("/runs/nope")
    assert resp.status_code == 404 and b"unknown run" in resp.data


def test_run_name_is_escaped_in_html(runs_root):
    from ui_fixtures import record_fixture_run
    run_id = record_fixture_run(runs_root, name=XSS)
    html = create_app(runs_root).test_client().get(f"/runs/{run_id}").get_data(as_text=True)
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_token_for_reads_gate(runs_root, fixture_run):
    c = create_app(runs_root, token="t0k", token_for_reads=True).test_client()
    assert c.get("/api/runs").status_code == 401
    assert c.get("/api/runs", headers={"Authorization": "Bearer t0k"}).status_code == 200
    resp = c.get("/runs?token=t0k")
    assert resp.status_code == 302 and "token" not in resp.headers["Location"]
    assert c.get("/api/runs").status_code == 200  # the cookie set by the redirect
    assert c.get("/static/app.css").status_code == 200


def test_main_refuses_public_host_without_token(monkeypatch, capsys):
    monkeypatch.delenv("ENGINE_UI_TOKEN", raising=False)
    assert main(["--host", "0.0.0.0", "--port", "1"]) == 2
    assert "refusing" in capsys.readouterr().err


def test_main_serves_on_localhost(runs_root, fixture_run):
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ui.app", "--port", str(port), "--runs", str(runs_root)],
                            stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=2) as r:
                    runs = json.load(r)["runs"]
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("engine ui did not start: " + proc.stderr.read())
        assert [r["id"] for r in runs] == [fixture_run]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_trusted_hosts_refuse_rebinding(runs_root, fixture_run):
    c = create_app(runs_root, trusted_hosts=["127.0.0.1", "localhost"]).test_client()
    assert c.get("/api/runs", headers={"Host": "127.0.0.1:8050"}).status_code == 200
    assert c.get("/api/runs", headers={"Host": "evil.example:8050"}).status_code == 400


def test_token_in_url_of_unknown_page_is_404_not_500(runs_root):
    c = create_app(runs_root, token="t0k", token_for_reads=True).test_client()
    assert c.get("/nowhere?token=t0k").status_code == 404
