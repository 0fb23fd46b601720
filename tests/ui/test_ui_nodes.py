"""Nodes page data from real engine-node metrics endpoints (cluster/metrics.py)."""
import time

from cluster.metrics import NodeMetrics
from ui import create_app
from ui.nodes import _gauges


def serve_node(name, step_s, samples_s, bw):
    m = NodeMetrics()
    m.step_seconds.set(step_s)
    m.samples_per_second.set(samples_s)
    m.allreduce_bandwidth.set(bw)
    m.last_heard = time.monotonic() - 0.5
    health = lambda: {"status": "ok", "node": name, "busy": True, "job": "j1", "step": 7,  # noqa: E731
                      "heartbeat_age_s": time.monotonic() - m.last_heard}
    server, port = m.serve("127.0.0.1", 0, health)
    return server, f"http://127.0.0.1:{port}"


def test_nodes_from_metrics_endpoints(tmp_path):
    s1, a1 = serve_node("tcp://gpu:5555", 0.012, 30000.0, 9.5e9)
    s2, a2 = serve_node("tcp://cpu:5555", 0.012, 10000.0, 9.1e9)
    try:
        c = create_app(tmp_path, cluster_addresses=[a1, a2, "127.0.0.1:1"]).test_client()
        r = c.get("/api/nodes").get_json()
        assert a1 in r["source"] and r["error"] is None
        gpu, cpu, dead = r["nodes"]
        assert gpu["address"] == "tcp://gpu:5555" and gpu["state"] == "training" and gpu["step"] == 7
        assert gpu["step_time_s"] == 0.012 and gpu["samples_per_s"] == 30000.0
        assert abs(gpu["allreduce_gbps"] - 9.5) < 1e-9
        assert abs(gpu["share"] - 0.75) < 1e-9 and abs(cpu["share"] - 0.25) < 1e-9
        assert 0.4 < gpu["heartbeat_age_s"] < 30
        assert dead["state"] == "unreachable" and dead["error"]
    finally:
        s1.shutdown()
        s2.shutdown()


def test_gauge_parser_ignores_labels_and_comments():
    text = "# HELP x y\n# TYPE x gauge\nx 1.5\nbad{code=\"a\"} 3\ny NaN\nz notanumber\n"
    g = _gauges(text)
    assert g["x"] == 1.5 and "bad" not in g and "z" not in g and g["y"] != g["y"]
