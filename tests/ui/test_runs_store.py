import os
import sqlite3
import subprocess
import sys
import time

import pytest

from engine.runs import RunRecorder
from ui.runs import RunStore
from ui_fixtures import explain_dict, profile, record_fixture_run


def test_round_trip(runs_root):
    run_id = record_fixture_run(runs_root, steps=12)
    store = RunStore(runs_root)
    [info] = store.list_runs()
    assert info["id"] == run_id and info["status"] == "finished"
    assert info["config"]["model"] == "mlp" and info["summary"]["device"] == "cpu-pocl"
    assert info["last_step"] == 11 and info["last_epoch"] == 1
    assert info["latest"]["loss"] == pytest.approx(2.3 / (1 + 0.2 * 11))
    m = store.metrics(run_id)
    assert [r["step"] for r in m] == list(range(12))
    assert m[3]["accuracy"] == pytest.approx(0.19)
    assert [r["step"] for r in store.metrics(run_id, since=9)] == [10, 11]
    assert store.graph(run_id) == explain_dict()
    ks = store.kernels(run_id)
    assert [k["name"] for k in ks] == [p["name"] for p in profile()] and ks[0]["step"] == 11


def test_unknown_and_hostile_ids_raise_keyerror(runs_root):
    record_fixture_run(runs_root)
    store = RunStore(runs_root)
    for bad in ["nope", "../runs", "..", "/etc/passwd", "a/../../b", "", "x" * 200, "a\x00b"]:
        with pytest.raises(KeyError):
            store.get(bad)
    assert not (runs_root / "nope").exists()  # a read never creates anything


def test_context_manager_records_crash(runs_root):
    with pytest.raises(RuntimeError):
        with RunRecorder.create(runs_root, "boom", {}) as rec:
            rec.log_metrics(0, 0, loss=1.0)
            raise RuntimeError("device lost")
    info = RunStore(runs_root).get(rec.run_id)
    assert info["status"] == "crashed" and "device lost" in info["summary"]["error"]


def test_killed_writer_shows_stale_and_keeps_committed_steps(runs_root):
    # A real process that logs 5 steps then dies without finish(): the UI must see the
    # 5 steps and call the run stale, not running.
    code = ("import os, sys; from engine.runs import RunRecorder\n"
            "r = RunRecorder.create(sys.argv[1], 'dies', {})\n"
            "[r.log_metrics(s, 0, loss=1.0 / (s + 1)) for s in range(5)]\n"
            "print(r.run_id, flush=True); os._exit(9)\n")
    out = subprocess.run([sys.executable, "-c", code, str(runs_root)], capture_output=True,
                         text=True, cwd=os.getcwd(), timeout=60)
    run_id = out.stdout.strip()
    store = RunStore(runs_root)
    info = store.get(run_id)
    assert info["recorded_status"] == "running" and info["status"] == "stale"
    assert [r["step"] for r in store.metrics(run_id)] == [0, 1, 2, 3, 4]


def test_old_heartbeat_is_stale(runs_root):
    rec = RunRecorder.create(runs_root, "slow", {})
    assert RunStore(runs_root).get(rec.run_id)["status"] == "running"
    with sqlite3.connect(rec.path / "run.db") as con:
        con.execute("UPDATE run SET heartbeat = ?", (time.time() - 3600,))
    assert RunStore(runs_root).get(rec.run_id)["status"] == "stale"
    rec.close()


def test_reader_sees_writes_while_writer_is_open(runs_root):
    rec = RunRecorder.create(runs_root, "live", {})
    store = RunStore(runs_root)
    rec.log_metrics(0, 0, loss=3.0)
    assert store.metrics(rec.run_id)[-1]["loss"] == 3.0
    rec.log_metrics(1, 0, loss=2.0)
    assert [r["loss"] for r in store.metrics(rec.run_id, since=0)] == [2.0]
    rec.close()


def test_finish_rejects_unknown_status(runs_root):
    rec = RunRecorder.create(runs_root, "x", {})
    with pytest.raises(ValueError, match="finished"):
        rec.finish("done")
    rec.close()


def test_heartbeat_thread_and_other_threads(runs_root):
    import threading
    rec = RunRecorder.create(runs_root, "beats", {}, heartbeat_s=0.05)
    first = RunStore(runs_root).get(rec.run_id)["heartbeat"]
    t = threading.Thread(target=lambda: [rec.log_metrics(s, 0, loss=1.0) for s in range(20)])
    t.start()
    t.join()
    time.sleep(0.3)
    info = RunStore(runs_root).get(rec.run_id)
    assert info["heartbeat"] > first and info["last_step"] == 19
    rec.finish("finished")
    rec.close()
    assert not rec._beat.is_alive()
