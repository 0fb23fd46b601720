"""engine-node --cpus (issue 14, several CPU nodes on one host): the node runs on the CPUs
it is given, with as many PoCL threads, says so in hello, refuses a list it cannot honour,
and a ring of nodes pinned to disjoint CPUs trains as an unpinned one does."""
import os

import numpy as np
import pytest

from cluster import Cluster, hostpool
from cluster.node_cli import cpu_list, parse_cpus
from cluster_helpers import SECRET, Session, child_env, proc_status, start_nodes

ALLOWED = sorted(os.sched_getaffinity(0))
two_cpus = pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two CPUs")


def test_cpu_lists_parse_and_print_in_the_linux_form():
    assert cpu_list([0, 1, 2, 3, 8, 10, 11]) == "0-3,8,10-11"
    assert parse_cpus(str(ALLOWED[0])) == [ALLOWED[0]]
    assert parse_cpus(cpu_list(ALLOWED)) == ALLOWED
    with pytest.raises(ValueError, match="'1-0'.*low to high"):
        parse_cpus("1-0")
    with pytest.raises(ValueError, match=r"CPU\(s\) 100000-999999999 .*not available"):
        parse_cpus(f"{ALLOWED[0]},100000-999999999")   # refused without expanding the range


def test_hostpool_counts_the_cpus_it_may_run_on(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert hostpool.threads() == 1


def test_pinned_node_runs_on_its_cpus_and_says_so(procs):
    cpu = ALLOWED[0]
    node = start_nodes(procs, 1, extra_args=("--cpus", str(cpu)))[0]
    pid = node["proc"].pid
    assert os.sched_getaffinity(pid) == {cpu}
    assert proc_status(pid)["Cpus_allowed_list"] == str(cpu)
    for tid in os.listdir(f"/proc/{pid}/task"):   # every thread, the BLAS pool started before the pin too
        assert os.sched_getaffinity(int(tid)) == {cpu}, tid
    s = Session(node["control"])
    try:
        info = s.hello()
    finally:
        s.close()
    assert info["cpus"] == [cpu]
    pocl = [d for d in info["devices"] if "pthread" in d.get("name", "") or "pocl" in d.get("platform", "").lower()]
    if pocl:   # PoCL read POCL_MAX_PTHREAD_COUNT=1 when the node opened its platform
        assert all(d["compute_units"] == 1 for d in pocl), info["devices"]
    assert f"pinned to CPUs {cpu} (1)" in node["proc"].log()


@pytest.mark.parametrize("cpus, says", [("0-", "'0-' in '0-' is not a CPU number or a range"),
                                        ("99999", "CPU(s) 99999 of '99999' not available: this host has")])
def test_a_bad_cpu_list_stops_the_node_with_the_reason(procs, cpus, says):
    p = procs.start(["-m", "cluster.node", "--listen", "tcp://127.0.0.1:*", "--metrics", "127.0.0.1:0"],
                    env=child_env(ENGINE_NODE_SECRET=SECRET, ENGINE_NODE_CPUS=cpus))
    assert p.wait(timeout=30) == 2
    assert p.stdout.read() == ""   # never served
    err = p.log()
    assert f"engine-node: --cpus: {says}" in err, err
    assert f"may use {cpu_list(ALLOWED)}" in err


@two_cpus
def test_nodes_pinned_to_disjoint_cpus_train_as_unpinned_ones(procs):
    engine = pytest.importorskip("engine", reason="the engine package is required")
    digits = pytest.importorskip("engine.examples.digits")
    F = engine.nn.functional
    xtr, ytr, _, _ = digits.load_digits()
    init = {k: v.numpy().copy() for k, v in digits.build_model("mlp").state_dict().items()}
    spec, B, steps = {"name": "adam", "lr": 2e-3}, 64, 6
    free = start_nodes(procs, 2)
    pinned = [start_nodes(procs, 1, extra_args=("--cpus", str(c)))[0] for c in ALLOWED[:2]]
    out = {}
    for name, nodes in (("free", free), ("pinned", pinned)):
        model = digits.build_model("mlp")
        model.load_state_dict(init)
        cl = Cluster([d["control"] for d in nodes], SECRET, heartbeat_s=0.5, missed=20, batch_multiple=32,
                     rebalance_tolerance=1.0)
        seen = {}
        out[name] = cl.fit(model, F.cross_entropy, spec, (xtr, ytr), global_batch=B, max_steps=steps,
                           on_step=lambda r: seen.setdefault("cpus", [n.info.get("cpus") for n in cl.nodes]))
        assert out[name].step == steps and all(h["world"] == 2 for h in out[name].history)
        # the driver keeps what hello said: a pinned node's CPUs, nothing from an unpinned one
        assert seen["cpus"] == ([[c] for c in ALLOWED[:2]] if name == "pinned" else [None, None])
    for p in pinned:
        assert "optimizer on the device" in p["proc"].log()
    # PoCL with 1 compute unit may plan a reduction differently from 2: float32 rounding only
    np.testing.assert_allclose([h["loss"] for h in out["pinned"].history], [h["loss"] for h in out["free"].history],
                               rtol=2e-5, atol=2e-6)
    for k in init:
        np.testing.assert_allclose(out["pinned"].params[k], out["free"].params[k], rtol=2e-5, atol=2e-6, err_msg=k)
    assert not np.allclose(out["pinned"].params[next(iter(init))], init[next(iter(init))])   # it did train
