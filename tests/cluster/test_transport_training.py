"""The gradient transport option end to end: Cluster(transport=...) -> the job's
`transport` field -> the node's ring all-reduce (cluster/transport.py)."""
import numpy as np
import pytest

from cluster import Cluster
from cluster.reference import ReferenceMLP, ReferenceProgram
from cluster_helpers import SECRET, Session, start_nodes

STEPS, B = 20, 64


def fit(nodes, model, transport=None, steps=STEPS):
    from engine.nn import functional as F
    from test_device_training import digits
    xtr, ytr, _, _ = digits.load_digits()
    kw = {} if transport is None else {"transport": transport}
    return Cluster([d["control"] for d in nodes], SECRET, heartbeat_s=0.5, missed=20, batch_multiple=32,
                   rebalance_tolerance=1.0, **kw).fit(model, F.cross_entropy, {"name": "adam", "lr": 2e-3},
                                                      (xtr, ytr), global_batch=B, max_steps=steps)


def test_bf16_transport_trains_and_float32_is_bit_equal_to_the_default(procs):
    """Two nodes on their devices, the weights checksum compared after every step (a
    mismatch stops fit with WeightsDiverged): the default, explicit fp32 and bf16."""
    pytest.importorskip("engine")
    from test_device_training import digits
    init = {k: v.numpy().copy() for k, v in digits.build_model("mlp").state_dict().items()}
    nodes = start_nodes(procs, 2, extra_args=("--digest-every", "1"))
    runs = {}
    for name in (None, "fp32", "bf16"):
        model = digits.build_model("mlp")
        model.load_state_dict(init)
        runs[name] = fit(nodes, model, name)
        assert runs[name].step == STEPS and all(h["world"] == 2 for h in runs[name].history)
    base, fp32, bf16 = runs[None], runs["fp32"], runs["bf16"]
    assert [h["loss"] for h in fp32.history] == [h["loss"] for h in base.history]
    for k in base.params:
        np.testing.assert_array_equal(fp32.params[k], base.params[k], err_msg=k)
    losses = [h["loss"] for h in bf16.history]
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), losses
    # the loss travels in float32 (exact_tail), so step 1's loss is the float32 run's exactly
    assert losses[0] == base.history[0]["loss"]
    # bf16 rounds every hop: close to float32 training, but not the same bits
    np.testing.assert_allclose(losses, [h["loss"] for h in base.history], rtol=0.05)
    assert any(not np.array_equal(bf16.params[k], base.params[k]) for k in base.params)


def test_bf16_transport_streams_between_devices_and_fp16_keeps_the_ring(procs):
    """Nodes that stream their all-reduce through shared memory send a bfloat16 job's
    gradients as bfloat16 values (packed on the device, summed there in float32 in rank
    order): every rank holds the same weights after every step (--digest-every 1), and
    training follows float32 training as closely as the ring's bfloat16 does.  A float16
    job is not streamed: it keeps its ring."""
    pytest.importorskip("engine")
    from test_device_training import digits
    init = {k: v.numpy().copy() for k, v in digits.build_model("mlp").state_dict().items()}
    nodes = start_nodes(procs, 2, extra_args=("--overlap-mb", "0.01", "--digest-every", "1"))
    runs = {}
    for name in ("float32", "bfloat16", "float16"):
        model = digits.build_model("mlp")
        model.load_state_dict(init)
        runs[name] = fit(nodes, model, name, steps=12)
        assert runs[name].step == 12 and all(h["world"] == 2 for h in runs[name].history)
    logs = [d["proc"].log() for d in nodes]
    assert all(log.count("summed on the devices (bfloat16 values)") == 1 for log in logs), logs
    assert all(log.count("streamed through shared memory") == 2 for log in logs)   # not for float16
    f32, bf16 = ([h["loss"] for h in runs[k].history] for k in ("float32", "bfloat16"))
    assert np.mean(bf16[-3:]) < np.mean(bf16[:3]), bf16
    assert bf16[0] == f32[0]                   # the loss travels in float32
    np.testing.assert_allclose(bf16, f32, rtol=0.05)
    assert any(not np.array_equal(runs["bfloat16"].params[k], runs["float32"].params[k]) for k in init)


def test_an_unknown_transport_is_refused_by_driver_and_node(procs):
    with pytest.raises(ValueError, match="bfloat16"):
        Cluster(["tcp://127.0.0.1:1"], SECRET, transport="int8")
    node = start_nodes(procs, 1)[0]
    sess = Session(node["control"])
    sess.hello()
    model = ReferenceMLP([64, 16, 10])
    x = np.random.default_rng(0).random((16, 64), dtype=np.float32)
    y = np.arange(16, dtype=np.int64) % 10
    fields = {"job": "j1", "optimizer": {"name": "sgd", "lr": 0.1}, "step": 0, "names": list(model.params),
              "n_state": 0}
    r = sess.request("job", fields | {"transport": "int8"}, list(model.params.values()), {"x": x, "y": y})
    assert r.type == "error" and r["code"] == "bad_job" and "int8" in r["message"], r
    r = sess.request("job", fields | {"transport": "bf16"}, list(model.params.values()), {"x": x, "y": y})
    assert r.type == "ok", r
    assert sess.request("program", {"job": "j1", "batch": 8,
                                    "program": ReferenceProgram(model.sizes, 8).to_json()}).type == "ok"
    sess.close()
