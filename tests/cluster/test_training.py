"""Distributed training equals single-process training on the same global batch."""
import numpy as np
import pytest

from cluster import Cluster, ClusterError, ReferenceMLP
from cluster.reference import blobs
from cluster_helpers import SECRET, accuracy, reference_fit, start_nodes

DATA = blobs()
STEPS = 12


@pytest.mark.parametrize("spec", [{"name": "sgd", "lr": 0.1, "momentum": 0.9},
                                  {"name": "adam", "lr": 0.01, "weight_decay": 1e-4}])
def test_one_two_four_nodes_match_single_process(procs, spec):
    xtr, ytr, _, _ = DATA
    model = ReferenceMLP([64, 48, 10], seed=1)
    want = reference_fit(model, spec, xtr, ytr, 60, STEPS)
    nodes = start_nodes(procs, 4)
    for n in (1, 2, 4):
        res = Cluster([d["control"] for d in nodes[:n]], SECRET, heartbeat_s=0.2).fit(
            ReferenceMLP([64, 48, 10], seed=1), None, spec, (xtr, ytr), global_batch=60, max_steps=STEPS)
        assert res.step == STEPS and len(res.history) == STEPS
        assert all(h["world"] == n and sum(h["shares"]) == 60 for h in res.history)
        for k in want:   # float32 tolerance: only the summation order differs
            np.testing.assert_allclose(res.params[k], want[k], rtol=2e-4, atol=2e-5, err_msg=f"{n} nodes, {k}")


def test_share_follows_measured_speed_when_a_node_slows_down(procs):
    xtr, ytr, xte, yte = DATA
    model = ReferenceMLP([64, 512, 10], seed=2)
    spec = {"name": "sgd", "lr": 0.05, "momentum": 0.9}
    want = reference_fit(model, spec, xtr, ytr, 200, 30)
    # node 1 runs 4x slower from step 12 on; its matmul benchmark cannot know that
    nodes = start_nodes(procs, 2, throttle={1: 4}, throttle_from=12)
    # nodes report every step (report_s=0): the driver sees the slowdown while they still run
    res = Cluster([d["control"] for d in nodes], SECRET, heartbeat_s=0.2, report_s=0).fit(
        model, None, spec, (xtr, ytr), global_batch=200, epochs=4, max_steps=30)
    assert res.step == 30
    assert min(res.history[11]["shares"]) >= 40, res.history[11]   # same speed: about even
    fast, slow = res.history[-1]["shares"]
    assert fast > 2 * slow, res.history[-1]   # throttled 4x: about a fifth of the batch
    assert any("rebalanced" in e["text"] for e in res.events)
    for k in want:   # sample-weighted gradients: the split does not change the result
        np.testing.assert_allclose(res.params[k], want[k], rtol=5e-4, atol=5e-5)
    assert accuracy(model, res.params, xte, yte) > 0.8


def test_nodes_read_a_named_dataset_from_their_data_directory(procs, tmp_path):
    from cluster import wire
    xtr, ytr, _, _ = DATA
    wire.save_table(str(tmp_path / "blobs.arrow"), {"x": xtr, "y": ytr})
    spec = {"name": "sgd", "lr": 0.1}
    nodes = start_nodes(procs, 2, ENGINE_NODE_DATA=tmp_path)
    res = Cluster([d["control"] for d in nodes], SECRET).fit(
        ReferenceMLP([64, 16, 10]), None, spec, (xtr, ytr), global_batch=64, max_steps=5, dataset_name="blobs")
    want = reference_fit(ReferenceMLP([64, 16, 10]), spec, xtr, ytr, 64, 5)
    for k in want:
        np.testing.assert_allclose(res.params[k], want[k], rtol=1e-4, atol=1e-5)
    with pytest.raises(ClusterError, match="differs from the driver's dataset"):   # other rows: refused
        Cluster([d["control"] for d in nodes], SECRET).fit(
            ReferenceMLP([64, 16, 10]), None, spec, (xtr[1:], ytr[1:]), global_batch=64, max_steps=1,
            dataset_name="blobs")
    with pytest.raises(ClusterError, match="not found"):
        Cluster([d["control"] for d in nodes], SECRET).fit(
            ReferenceMLP([64, 16, 10]), None, spec, (xtr, ytr), global_batch=64, max_steps=1, dataset_name="nope")
