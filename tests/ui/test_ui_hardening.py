"""Issue 12, the UI's part: a run's recorded weights file is never followed out of the
run's directory, and /metrics of a very long run costs bounded memory.  Against a real
`engine ui` process."""
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from engine.runs import DB_NAME, RunRecorder

ROOT = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ui_server(tmp_path):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-m", "ui.app", "--runs", str(tmp_path / "runs"), "--port", str(port)],
                         cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/api/runs", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        yield p, base, tmp_path / "runs"
    finally:
        p.kill()
        p.wait(10)


def get_json(url):
    try:
        return 200, json.loads(urllib.request.urlopen(url, timeout=60).read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def peak_rss_kb(pid):
    """VmHWM: the process's peak resident memory so far."""
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith("VmHWM")).split()[1])


def test_weights_file_outside_the_run_is_not_read(ui_server, tmp_path):
    proc, base, runs = ui_server
    secret = tmp_path / "outside.safetensors"
    from safetensors.numpy import save_file
    save_file({"0.weight": np.full((2, 2), 7, np.float32)}, str(secret))
    for name, how in (("escape", str(secret)), ("dots", "../../outside.safetensors"), ("link", "weights.safetensors")):
        rec = RunRecorder.create(runs, name, {"example": "digits", "model": "mlp"})
        rec.log_metrics(0, 0, loss=1.0)
        rec.finish()
        if name == "link":
            os.symlink(secret, rec.path / "weights.safetensors")
        con = sqlite3.connect(rec.path / DB_NAME)
        with con:
            con.execute("INSERT OR REPLACE INTO weights (id, file, t) VALUES (0, ?, ?)", (how, time.time()))
        con.close()
        code, body = get_json(f"{base}/api/runs/{rec.run_id}/layers")
        assert code == 200, body
        assert "not a file inside the run" in body.get("weights_error", ""), body
        assert "7.0" not in json.dumps(body)                         # nothing of the outside file
    assert proc.poll() is None


def test_metrics_of_a_very_long_run_cost_bounded_memory(ui_server):
    proc, base, runs = ui_server
    rec = RunRecorder.create(runs, "long", {"example": "digits", "model": "mlp"})
    rec.finish()
    n = 150_000       # x2 keys: 300k rows; the unbounded reader peaked ~650 MB higher for 6 requests, now ~50
    con = sqlite3.connect(rec.path / DB_NAME)
    with con:
        con.executemany("INSERT INTO metric (step, epoch, t, key, value) VALUES (?, 0, 0.0, ?, ?)",
                        ((s, k, float(s)) for s in range(n) for k in ("loss", "accuracy")))
    con.close()
    get_json(f"{base}/api/runs")                         # warm up the server
    rss0 = peak_rss_kb(proc.pid)
    with ThreadPoolExecutor(6) as ex:
        results = list(ex.map(get_json, [f"{base}/api/runs/{rec.run_id}/metrics"] * 6))
    grew_mb = (peak_rss_kb(proc.pid) - rss0) / 1024
    for code, body in results:
        rows = body["metrics"]
        assert code == 200 and 0 < len(rows) <= 4001, len(rows)
        assert rows[-1]["step"] == n - 1 and rows[0]["step"] == 0    # the whole run, thinned
    assert grew_mb < 100, f"UI's peak memory grew by {grew_mb:.0f} MB for 6 requests"
    code, body = get_json(f"{base}/api/runs/{rec.run_id}/metrics?since={n - 3}")
    assert [r["step"] for r in body["metrics"]] == [n - 2, n - 1]   # polling still gets every new step
