"""Engine programs train on the node's device (cluster/devicetrain.py): weights and
optimizer state stay there and the update is engine.optim's fused kernel, so 1 and 2
nodes equal the single-process engine (engine.optim on the same global batch)."""
import numpy as np
import pytest

from cluster import Cluster
from cluster.driver import epoch_order
from cluster_helpers import SECRET, start_nodes

engine = pytest.importorskip("engine", reason="the engine package is required")
digits = pytest.importorskip("engine.examples.digits", reason="the digits example is required")
F = pytest.importorskip("engine.nn.functional")
STEPS, B = 10, 64


def local_fit(init, spec, x, y, batch=None, steps=None):
    """Single-process engine training: eager forward/backward, engine.optim update (steps
    of `batch` rows of the first epoch's order; STEPS of B by default)."""
    batch, steps = batch or B, steps or STEPS
    from engine import optim
    from engine.tensor import tensor
    model = digits.build_model("mlp")
    model.load_state_dict(init)
    if spec["name"] == "sgd":
        opt = optim.SGD(model.parameters(), lr=spec["lr"], momentum=spec.get("momentum", 0.0))
    else:
        opt = optim.Adam(model.parameters(), lr=spec["lr"], weight_decay=spec.get("weight_decay", 0.0))
    perm, losses = epoch_order(len(x), 0, 0), []
    for s in range(steps):
        idx = perm[s * batch:(s + 1) * batch]
        opt.zero_grad()
        loss = F.cross_entropy(model(tensor(x[idx])), tensor(y[idx]))
        loss.backward()
        opt.step()
        losses.append(float(loss.numpy()))
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}, losses, opt


def tolerances(n: int, spec: dict) -> tuple:
    """(loss, weights) tolerances of n nodes against the single-process engine.  float32:
    one node runs the same kernels (rounding only); two sum two half-batch means.  Adam
    divides by the gradient's root mean square, so a weight whose gradient is near zero
    moves by up to lr a step whatever its size, and two nodes' other summation order can
    move it by a small part of lr (one weight in 8192 of fc2 by 0.002 lr, with the initial
    weights that other tests' draws left)."""
    tol = dict(rtol=1e-5, atol=1e-6) if n == 1 else dict(rtol=2e-5, atol=2e-6)
    if n == 1 or spec["name"] != "adam":
        return tol, tol
    return tol, dict(tol, atol=5e-3 * spec["lr"])


@pytest.mark.parametrize("spec", [{"name": "sgd", "lr": 0.1, "momentum": 0.9},
                                  {"name": "adam", "lr": 2e-3, "weight_decay": 1e-4}])
def test_one_and_two_nodes_equal_single_process_engine(procs, spec):
    xtr, ytr, _, _ = digits.load_digits()
    engine.manual_seed(3)     # the same initial weights whichever tests ran before
    init = {k: v.numpy().copy() for k, v in digits.build_model("mlp").state_dict().items()}
    want, losses, opt = local_fit(init, spec, xtr, ytr)
    nodes = start_nodes(procs, 2)
    for n in (1, 2):
        model = digits.build_model("mlp")
        model.load_state_dict(init)
        cl = Cluster([d["control"] for d in nodes[:n]], SECRET, heartbeat_s=0.5, missed=20, batch_multiple=32,
                     rebalance_tolerance=1.0)
        seen = {}
        res = cl.fit(model, F.cross_entropy, spec, (xtr, ytr), global_batch=B, max_steps=STEPS,
                     on_step=lambda r: seen.setdefault("state", cl._state()) if r["step"] == STEPS else None)
        assert res.step == STEPS
        assert "optimizer on the device" in nodes[0]["proc"].log()
        tol, wtol = tolerances(n, spec)
        np.testing.assert_allclose([h["loss"] for h in res.history], losses, **tol, err_msg=f"{n} node(s): loss")
        for k in want:
            np.testing.assert_allclose(res.params[k], want[k], **wtol, err_msg=f"{n} node(s): {k}")
        # optimizer state comes back from the device in HostOptimizer's order
        _, state, at = seen["state"]
        names = ("momentum_buffer",) if spec["name"] == "sgd" else ("exp_avg", "exp_avg_sq")
        local = [opt.state[i][name].numpy() for name in names for i in range(len(want))]
        assert at == STEPS and len(state) == len(local)
        for a, b in zip(state, local):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_nodes_that_keep_the_rows_on_the_device_equal_single_process_engine(procs):
    """ENGINE_NODE_DATA_ON_DEVICE=1 (a GPU node's default when the rows fit): each batch
    is gathered on the device from the rows kept there, in a lone node's run and in two
    streaming nodes' (their gradients summed on the devices); the losses and weights
    are the single-process engine's."""
    spec = {"name": "adam", "lr": 2e-3}
    xtr, ytr, _, _ = digits.load_digits()
    engine.manual_seed(3)
    init = {k: v.numpy().copy() for k, v in digits.build_model("mlp").state_dict().items()}
    want, losses, _ = local_fit(init, spec, xtr, ytr)
    nodes = start_nodes(procs, 2, extra_args=("--overlap-mb", "0.01"), ENGINE_NODE_DATA_ON_DEVICE="1")
    for n in (1, 2):
        model = digits.build_model("mlp")
        model.load_state_dict(init)
        cl = Cluster([d["control"] for d in nodes[:n]], SECRET, heartbeat_s=0.5, missed=20, batch_multiple=32,
                     rebalance_tolerance=1.0)
        res = cl.fit(model, F.cross_entropy, spec, (xtr, ytr), global_batch=B, max_steps=STEPS)
        assert res.step == STEPS
        tol, wtol = tolerances(n, spec)
        np.testing.assert_allclose([h["loss"] for h in res.history], losses, **tol, err_msg=f"{n} node(s): loss")
        for k in want:
            np.testing.assert_allclose(res.params[k], want[k], **wtol, err_msg=f"{n} node(s): {k}")
    for d in nodes:
        log = d["proc"].log()
        assert "rows kept in device memory" in log
        assert "streamed through shared memory" in log and "summed on the devices" in log


def test_rows_are_kept_on_a_gpu_only_when_they_fit_its_share_of_memory(monkeypatch, caplog):
    """ENGINE_NODE_DATA_ON_DEVICE=auto (the default): rows a GPU can hold in DATA_SHARE
    of its memory are kept there; larger ones stay on the host, and the node says so; a
    CPU device gathers on the host.  =1 with rows larger than one allocation: on the
    host, with a warning."""
    import logging
    from cluster import devicetrain, program
    from cluster.devicetrain import DeviceTrainer
    xtr, ytr, _, _ = digits.load_digits()
    model = digits.build_model("mlp")
    prog = program.trace(model, F.cross_entropy, xtr[:32], ytr[:32])
    params = list(program.params_of(model).values())
    monkeypatch.delenv("ENGINE_NODE_DATA_ON_DEVICE", raising=False)
    rows = np.arange(32)

    def kept(gpu: bool, share: float) -> dict:
        monkeypatch.setattr(DeviceTrainer, "is_gpu", property(lambda self: gpu))
        monkeypatch.setattr(devicetrain, "DATA_SHARE", share)
        runner = prog.bind()
        tr = DeviceTrainer(runner.device, {"name": "adam", "lr": 1e-2}, params, [], 0)
        tr.bind(runner)
        tr.settle(tr.launch_alone(runner, xtr, ytr, rows))
        return tr.kept[1]

    nbytes = xtr.nbytes + ytr.size * 8
    total = prog.bind().device.cl_device.global_mem_size
    with caplog.at_level(logging.INFO, logger="cluster.devicetrain"):
        assert set(kept(True, 2 * nbytes / total)) == {"x", "y"}
        assert kept(True, 0.5 * nbytes / total) == {}
        assert "rows stay in host memory" in caplog.text
        assert kept(False, 1.0) == {}
        # forced, but more than one allocation can hold: gathered on the host, with a warning
        import types
        monkeypatch.setenv("ENGINE_NODE_DATA_ON_DEVICE", "1")
        runner = prog.bind()
        tr = DeviceTrainer(runner.device, {"name": "adam", "lr": 1e-2}, params, [], 0)
        real = tr.device.cl_device
        monkeypatch.setattr(tr.device, "cl_device", types.SimpleNamespace(
            max_mem_alloc_size=xtr.nbytes - 1, global_mem_size=real.global_mem_size, type=real.type))
        assert tr._rows_kept(runner, xtr, ytr) == {}
        monkeypatch.setattr(tr.device, "cl_device", real)
        assert "cannot be kept on the device" in caplog.text


def test_each_piece_is_final_after_the_launches_planned_for_it():
    """A streamed step sends piece p once the launches up to `ends[p]` have run
    (DeviceTrainer._piece_plan): the 512 x 64 weight's gradient, cut into three pieces, is
    computed by GEMM launches of a block of rows each, and each piece's values are final
    right after the launches planned for it (all else still NaN is no matter), as is the
    loss after its own; the whole list gives the same bits as the captured one.  512 rows:
    a GPU's tiled GEMM computes 128 rows a work-group, so a 64-row weight is one block."""
    import types
    from cluster import program
    from cluster.devicetrain import DeviceTrainer
    from engine import launch, realize as rz
    xtr, ytr, _, _ = digits.load_digits()
    from engine import nn
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 10))
    runner = program.trace(model, F.cross_entropy, xtr[:32], ytr[:32]).bind()
    tr = DeviceTrainer(runner.device, {"name": "adam", "lr": 1e-2}, list(program.params_of(model).values()), [], 0)
    tr.bind(runner)
    tr.local_step(runner, xtr[:32], ytr[:32])      # captures the launch list
    outs = [rz.buffer_of(t.node) for t in runner.step.outs]
    launch.replay(runner.step.items, tr.device)
    want = [tr.device.download(b, (b.nbytes // 4,), "float32") for b in outs]
    offs, i = tr.offsets, tr.shapes.index((512, 64))
    third = tr.sizes[i] // 3
    cuts = [offs[i], offs[i] + third + 7, offs[i] + 2 * third + 7, offs[i + 1]]     # rows 170 and 341, not whole
    spans = [[(j, offs[j], offs[j + 1])] for j in reversed(range(len(tr.sizes))) if j != i and j > i] + \
        [[(i, a, b)] for a, b in zip(cuts, cuts[1:])] + \
        [[(j, offs[j], offs[j + 1])] for j in reversed(range(i))]
    items, ends, loss_end = tr._piece_plan(runner, types.SimpleNamespace(spans=spans, plans={}))
    assert len(items) == len(runner.step.items) + 2       # that GEMM: three launches instead of one
    nan = [np.full(b.nbytes // 4, np.nan, np.float32) for b in outs]

    def after(k):      # the outputs after the first k launches of the plan
        for b, v in zip(outs, nan):
            tr.device.upload(v, dest=b)
        launch.replay(items[:k], tr.device)
        return [tr.device.download(b, (b.nbytes // 4,), "float32") for b in outs]

    assert np.array_equal(after(loss_end)[0], want[0])
    for span, end in zip(spans, ends):
        got = after(end)
        for j, a, b in span:
            assert np.array_equal(got[1 + j][a - offs[j]:b - offs[j]], want[1 + j][a - offs[j]:b - offs[j]]), (j, a, b)
    assert all(np.array_equal(g, w) for g, w in zip(after(len(items)), want))


def test_device_snapshot_rolls_back_weights_and_optimizer_state():
    """The rollback a re-formed ring asks for (cluster/job_handlers.py _on_ring): a device-side copy
    restores weights, Adam's moments and its step count; re-running the step then gives
    bitwise the same weights as the first time."""
    from cluster import program
    from cluster.devicetrain import DeviceTrainer
    xtr, ytr, _, _ = digits.load_digits()
    model = digits.build_model("mlp")
    prog = program.trace(model, F.cross_entropy, xtr[:32], ytr[:32])
    runner = prog.bind()
    params = list(program.params_of(model).values())
    tr = DeviceTrainer(runner.device, {"name": "adam", "lr": 1e-2}, params, [], 0)
    tr.bind(runner)
    flat = np.empty(sum(tr.sizes) + 1, np.float32)

    def step(i):
        tr.forward_backward(runner, xtr[i * 32:(i + 1) * 32], ytr[i * 32:(i + 1) * 32], flat)
        tr.update(flat)

    step(0)
    tr.snapshot(1)
    before, state0 = tr.weights(), tr.state()
    step(1)
    once, state1 = tr.weights(), tr.state()
    assert not np.array_equal(once[0], before[0])
    assert tr.restore() == 1 and tr.t == 1
    assert all(np.array_equal(a, b) for a, b in zip(tr.weights() + tr.state(), before + state0))
    step(1)
    assert all(np.array_equal(a, b) for a, b in zip(tr.weights() + tr.state(), once + state1))


@pytest.mark.parametrize("stream", [("--overlap-mb", "0"), ("--overlap-mb", "0.01")], ids=["ring", "streamed"])
def test_engine_job_survives_sigkill_and_a_join(procs, stream):
    """A node killed mid-training and one joining: the device path keeps the weights
    every node holds equal (the driver compares checksums) and training completes; also
    with the all-reduce streamed through shared memory (the survivors' wait for the dead
    node's piece ends, and the new ring streams again)."""
    import signal
    import threading
    xtr, ytr, _, _ = digits.load_digits()
    nodes = start_nodes(procs, 4, throttle={1: 3}, extra_args=("--digest-every", "1", *stream))
    victim = nodes[1]["proc"]
    # shares in units of 32 and no rebalancing: few batch sizes, so few OpenCL builds
    cl = Cluster([n["control"] for n in nodes[:3]], SECRET, heartbeat_s=0.25, missed=6, batch_multiple=32,
                 rebalance_tolerance=1.0)

    def on_step(rec):
        if rec["step"] == 6:
            threading.Timer(0.01, lambda: victim.send_signal(signal.SIGKILL)).start()
        if rec["step"] == 12:
            cl.add(nodes[3]["control"])

    # nodes run ahead of on_step; sync_every=6 stops them at steps 6, 12 and 18, so the kill
    # lands in the run from step 6 and the join at step 12
    res = cl.fit(digits.build_model("mlp"), F.cross_entropy, {"name": "adam", "lr": 2e-3}, (xtr, ytr),
                 global_batch=96, epochs=2, max_steps=20, on_step=on_step, sync_every=6)
    assert victim.wait(5) == -signal.SIGKILL
    assert res.step == 20 == len(res.history)
    worlds = [h["world"] for h in res.history]
    assert worlds[:6] == [3] * 6 and 2 in worlds and worlds[-1] == 3, worlds
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    streamed = ["summed on the devices" in n["proc"].log() for n in (nodes[0], nodes[2], nodes[3])]
    assert streamed == [stream[1] != "0"] * 3


def test_a_rank_lost_at_the_loss_piece_leaves_the_others_able_to_go_on(procs):
    """A streaming node dies after all its gradient pieces went through shared memory,
    just before it would publish the loss: the others, whose tail of that step is queued
    on their devices behind the loss, skip its update, give the step back, and the run
    goes on with two nodes to the same weights on both."""
    from pathlib import Path
    xtr, ytr, _, _ = digits.load_digits()
    args = ("--digest-every", "1", "--overlap-mb", "0.01")
    nodes = start_nodes(procs, 1, extra_args=args) + \
        start_nodes(procs, 1, extra_args=args, entry=(str(Path(__file__).with_name("vanishing_node.py")),),
                    VANISH_AT_CALL="4") + start_nodes(procs, 1, extra_args=args)
    victim = nodes[1]["proc"]
    cl = Cluster([n["control"] for n in nodes], SECRET, heartbeat_s=0.25, missed=6, batch_multiple=32,
                 rebalance_tolerance=1.0)
    res = cl.fit(digits.build_model("mlp"), F.cross_entropy, {"name": "adam", "lr": 2e-3}, (xtr, ytr),
                 global_batch=96, epochs=2, max_steps=12)
    assert victim.wait(5) == 9
    assert res.step == 12 == len(res.history)
    worlds = [h["world"] for h in res.history]
    assert worlds[:3] == [3] * 3 and worlds[-1] == 2, worlds
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    for n in (nodes[0], nodes[2]):
        log = n["proc"].log()
        assert "summed on the devices" in log and "Traceback" not in log, log[-3000:]


def test_node_rolls_back_a_finished_step_from_its_device_snapshot(procs):
    """Hand-driven, as the driver does it: a node that finished step 0 is asked to re-form
    the ring at step 0 (the ring abandoned it): it restores weights, optimizer state and
    step from the device snapshot, and re-running the step gives bitwise the same result.
    Once a ring formed at step 1, a ring at step 0 is refused."""
    from cluster import program
    from cluster_helpers import Session
    xtr, ytr, _, _ = digits.load_digits()
    model = digits.build_model("mlp")
    params = program.params_of(model)
    prog = program.trace(model, F.cross_entropy, xtr[:32], ytr[:32]).to_json()
    node = start_nodes(procs, 1)[0]
    s = Session(node["control"])
    data = s.hello()["data"]

    def ok(m):
        assert m is not None and m.type in ("ok", "step_done", "state_data"), m and m.fields
        return m
    ok(s.request("job", {"job": "j", "optimizer": {"name": "adam", "lr": 1e-2}, "step": 0, "names": list(params),
                         "n_state": 0}, list(params.values()), table={"x": xtr, "y": ytr}))
    ok(s.request("program", {"job": "j", "batch": 32, "program": prog}, timeout=120))
    ring = lambda gen, step: s.request("ring", {"job": "j", "gen": gen, "rank": 0, "peers": [data], "step": step})
    idx = np.arange(32, dtype=np.int64)
    step = lambda gen, at: ok(s.request("step", {"job": "j", "gen": gen, "step": at, "batch": 32, "weight": 1.0}, [idx]))
    state = lambda: ok(s.request("state", {"job": "j"}))
    ok(ring(1, 0))
    step(1, 0)
    first = state()
    assert first["step"] == 1 and first["n_state"] == 2 * len(params)
    assert not np.array_equal(first.tensors[0], list(params.values())[0])
    assert ok(ring(2, 0))["step"] == 0
    back = state()
    assert back["step"] == 0
    for got, want in zip(back.tensors, list(params.values())):
        np.testing.assert_array_equal(got, want)
    assert all(not t.any() for t in back.tensors[len(params):])   # Adam's moments are zero again
    step(2, 0)
    again = state()
    for a, b in zip(again.tensors, first.tensors):
        np.testing.assert_array_equal(a, b)
    assert ok(ring(3, 1))["step"] == 1
    refused = ring(4, 0)
    assert refused.type == "error" and "cannot resume at 0" in refused["message"]
    s.close()


def test_mixed_devices_keep_the_optimizer_on_the_host(procs):
    """Fused updates on different devices may round differently: the driver asks for the
    host optimizer when the nodes' devices differ (or when told to), and the node obeys."""
    from cluster import ReferenceMLP, program
    from cluster.driver import wants_host_optimizer
    from cluster_helpers import Session
    model = digits.build_model("mlp")
    a, b = {"device": "NVIDIA CUDA|NVIDIA H200|580"}, {"device": "Portable Computing Language|cpu|5.0"}
    assert wants_host_optimizer(model, [a, b]) and not wants_host_optimizer(model, [a, a])
    assert not wants_host_optimizer(ReferenceMLP([4, 2]), [a, b])
    xtr, ytr, _, _ = digits.load_digits()
    params = program.params_of(model)
    node = start_nodes(procs, 1)[0]
    s = Session(node["control"])
    assert s.hello()["device"] == program.device_identity()
    m = s.request("job", {"job": "j", "optimizer": {"name": "sgd", "lr": 0.1}, "step": 0, "names": list(params),
                          "n_state": 0, "host_optimizer": True}, list(params.values()), table={"x": xtr, "y": ytr})
    assert m.type == "ok", m.fields
    prog = program.trace(model, F.cross_entropy, xtr[:32], ytr[:32]).to_json()
    m = s.request("program", {"job": "j", "batch": 32, "program": prog}, timeout=120)
    assert m.type == "ok", m.fields
    assert "optimizer on the host" in node["proc"].log()
    s.close()
