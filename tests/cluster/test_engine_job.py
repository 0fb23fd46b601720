"""Jobs carry engine IR: nodes compile the traced step for their OpenCL device."""
import numpy as np
import pytest

from cluster import Cluster, ReferenceMLP
from cluster_helpers import SECRET, reference_fit, start_nodes

engine = pytest.importorskip("engine", reason="the engine package is required")
digits = pytest.importorskip("engine.examples.digits", reason="the digits example is required")


def test_two_nodes_train_engine_ir_like_numpy_reference(procs):
    xtr, ytr, _, _ = digits.load_digits()
    engine.manual_seed(5)     # the same initial weights whichever tests ran before
    model = digits.build_model("mlp")
    init = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    spec, steps = {"name": "adam", "lr": 2e-3}, 8
    nodes = start_nodes(procs, 2)
    # fixed, equal shares: one program (batch 32) per node, so one OpenCL build each
    res = Cluster([n["control"] for n in nodes], SECRET, heartbeat_s=0.5, missed=20, batch_multiple=32,
                  rebalance_tolerance=1.0).fit(model, engine.nn.functional.cross_entropy, spec, (xtr, ytr),
                                               global_batch=64, max_steps=steps)
    assert res.step == steps and all(h["shares"] == [32, 32] for h in res.history)
    assert list(res.params) == list(init)
    ref = ReferenceMLP([64, 128, 64, 10])
    ref.params = {f"{i // 2}.{'weight' if i % 2 == 0 else 'bias'}": init[k] for i, k in enumerate(init)}
    want = reference_fit(ref, spec, xtr, ytr, 64, steps)
    # Adam moves a weight by up to lr a step whatever its gradient's size, so where a
    # gradient is all rounding (digits' near-constant pixels) the numpy reference's other
    # summation order can flip a step: a few weights of fc1 (0.4 % with some initial
    # weights) end up to ~2 lr apart.  Nearly all must agree closely, and none by more
    # than Adam's steps could move it.
    for k, w in zip(res.params, want.values()):
        close = np.isclose(res.params[k], w, rtol=1e-3, atol=1e-4)
        assert close.mean() >= 0.99, f"{k}: {np.count_nonzero(~close)} of {close.size} weights differ"
        np.testing.assert_allclose(res.params[k], w, rtol=0, atol=2 * spec["lr"] * steps, err_msg=k)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    got = {k: v.numpy() for k, v in model.state_dict().items()}   # fit leaves the trained weights in the model
    assert all(np.array_equal(got[k], res.params[k]) for k in got)
