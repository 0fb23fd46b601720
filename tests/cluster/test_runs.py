"""Nodes step on their own (cluster/runs.py): the driver sends a run once, the nodes
train in lockstep through the ring and report asynchronously.  The result equals
single-process training on the same global batches, with and without gradient
accumulation, and a node stopped mid-run (SIGSTOP) is dropped and the run recovers."""
import signal
import time

import numpy as np
import pytest

from cluster import Cluster, ReferenceMLP, hostpool
from cluster.driver import ClusterError
from cluster.reference import blobs
from cluster_helpers import SECRET, reference_fit, start_nodes

XTR, YTR, _, _ = blobs()
SPEC = {"name": "adam", "lr": 1e-2}


class CountingCluster(Cluster):
    """Counts what the driver sends (by type) and the progress reports it reads."""

    def fit(self, *a, **kw):
        self.sent, self.reports = {}, 0
        return super().fit(*a, **kw)

    def _hello(self, address):
        n = super()._hello(address)
        send = n.send

        def counted(type, *a, **kw):
            self.sent[type] = self.sent.get(type, 0) + 1
            return send(type, *a, **kw)
        n.send = counted
        return n

    def _progress(self, n, m):
        self.reports += 1
        super()._progress(n, m)


def test_driver_messages_do_not_grow_with_the_steps(procs):
    """Two nodes, 8 and 64 steps: the driver sends the same handful of messages to each
    node (job, program, ring, run, state, stop, besides heartbeats) whatever the number
    of steps, and reads a few batched progress reports, not one reply per step."""
    nodes = start_nodes(procs, 2)
    counts = {}
    for steps in (8, 64):
        # no rebalancing: shares moved by a timing blip would add a legitimate program message
        cl = CountingCluster([n["control"] for n in nodes], SECRET, heartbeat_s=0.5, missed=20, report_s=0.5,
                             rebalance_tolerance=1.0)
        res = cl.fit(ReferenceMLP([64, 32, 10]), None, SPEC, (XTR, YTR), global_batch=40, epochs=2, max_steps=steps)
        assert res.step == steps == len(res.history)
        want = reference_fit(ReferenceMLP([64, 32, 10]), SPEC, XTR, YTR, 40, steps)
        for k in want:
            np.testing.assert_allclose(res.params[k], want[k], rtol=2e-4, atol=2e-5)
        counts[steps] = ({t: c for t, c in cl.sent.items() if t != "ping"}, cl.reports)
    (few, _), (many, r_many) = counts[8], counts[64]
    assert few == many, counts               # O(1) per node: no message per step
    assert few["run"] == 2 and "step" not in few, few
    # batched every 0.5 s (and at the end of the run): far fewer than one per step and node
    assert r_many < 64, r_many


def test_loss_curve_and_weights_equal_single_process_with_accumulation(procs):
    """2 nodes x 3 micro-batches (global batch 60: shares of 30 cut into 10s) give the
    single-process float32 result on batches of 60, loss for loss."""
    nodes = start_nodes(procs, 2)
    steps = 12
    model = ReferenceMLP([64, 48, 10], seed=3)
    want = reference_fit(model, SPEC, XTR, YTR, 60, steps)
    # the single-process loss curve: the reference program's loss on each global batch
    from cluster.reference import ReferenceProgram, epoch_order
    from cluster.optimizer import HostOptimizer
    params = [np.array(v) for v in model.state_dict().values()]
    opt, prog, losses = HostOptimizer(SPEC, [p.shape for p in params]), ReferenceProgram(model.sizes, 60), []
    for s in range(steps):
        e, i = divmod(s, len(XTR) // 60)
        idx = epoch_order(len(XTR), 0, e)[i * 60:(i + 1) * 60]
        loss, grads = prog.run(params, XTR[idx], YTR[idx])
        losses.append(loss)
        opt.update(params, grads)
    for acc in (1, 3):
        res = Cluster([n["control"] for n in nodes], SECRET, heartbeat_s=0.5).fit(
            ReferenceMLP([64, 48, 10], seed=3), None, SPEC, (XTR, YTR), global_batch=60, max_steps=steps,
            accumulate=acc)
        assert res.step == steps
        np.testing.assert_allclose([h["loss"] for h in res.history], losses, rtol=2e-5, atol=1e-6,
                                   err_msg=f"accumulate={acc}: loss curve")
        for k in want:
            np.testing.assert_allclose(res.params[k], want[k], rtol=2e-4, atol=2e-5, err_msg=f"accumulate={acc}, {k}")


def test_engine_accumulation_equals_single_process_engine(procs):
    """The device path: one node and two, 2 micro-batches each, against engine.optim in
    one process on the same global batches (float32)."""
    pytest.importorskip("engine")
    from engine.nn import functional as F
    from test_device_training import B, STEPS, digits, local_fit
    xtr, ytr, _, _ = digits.load_digits()
    init = {k: v.numpy().copy() for k, v in digits.build_model("mlp").state_dict().items()}
    spec = {"name": "adam", "lr": 2e-3}
    want, losses, _ = local_fit(init, spec, xtr, ytr)
    nodes = start_nodes(procs, 2)
    for n in (1, 2):
        model = digits.build_model("mlp")
        model.load_state_dict(init)
        res = Cluster([d["control"] for d in nodes[:n]], SECRET, heartbeat_s=0.5, missed=20, batch_multiple=32,
                      rebalance_tolerance=1.0).fit(model, F.cross_entropy, spec, (xtr, ytr), global_batch=B,
                                                   max_steps=STEPS, accumulate=2)
        np.testing.assert_allclose([h["loss"] for h in res.history], losses, rtol=2e-5, atol=2e-6,
                                   err_msg=f"{n} node(s): loss")
        for k in want:   # float32 (micro-batch sums in another order); Adam magnifies ulps
            np.testing.assert_allclose(res.params[k], want[k], rtol=1e-4, atol=1e-5, err_msg=f"{n} node(s): {k}")


@pytest.mark.parametrize("stream", [(), ("--overlap-mb", "0.01")], ids=["ring", "streamed"])
def test_a_node_stopped_mid_run_is_dropped_and_the_run_recovers(procs, stream):
    """SIGSTOP one of three nodes while they run on their own: the driver notices the
    silence, aborts the others, rolls them back to a step all can reach and runs on
    with two; the result is the single-process one.  params() mid-run halts the nodes at
    a step boundary and the run goes on from there.  Also with the all-reduce streamed
    through shared memory (summed on the host: reference programs)."""
    nodes = start_nodes(procs, 3, throttle={1: 3}, extra_args=stream)
    victim, seen = nodes[1]["proc"], {}
    cl = Cluster([n["control"] for n in nodes], SECRET, heartbeat_s=0.25, missed=6, report_s=0)

    def on_step(rec):
        if rec["step"] == 5:
            seen["params"] = cl.params()        # halts the run, then it goes on
        if rec["step"] == 12:
            victim.send_signal(signal.SIGSTOP)

    steps = 150
    try:
        res = cl.fit(ReferenceMLP([64, 128, 10]), None, SPEC, (XTR, YTR), global_batch=64, epochs=10,
                     max_steps=steps, on_step=on_step)
    finally:
        victim.send_signal(signal.SIGCONT)
    assert res.step == steps == len(res.history)
    assert [h["step"] for h in res.history] == list(range(1, steps + 1))
    lost = [e["text"] for e in res.events if "lost" in e["text"]]
    assert len(lost) == 1 and nodes[1]["control"] in lost[0] and "silent" in lost[0], res.events
    worlds = [h["world"] for h in res.history]
    assert worlds[:12] == [3] * 12 and worlds[-1] == 2, worlds
    want = reference_fit(ReferenceMLP([64, 128, 10]), SPEC, XTR, YTR, 64, steps)
    for k in want:
        np.testing.assert_allclose(res.params[k], want[k], rtol=1e-3, atol=1e-4)
    assert set(seen["params"]) == set(want)
    assert ["summed on the host" in n["proc"].log() for n in nodes] == [bool(stream)] * 3


def test_rollback_target_is_the_latest_step_every_node_reaches():
    t = Cluster._rollback_target
    assert t({1: (7, 6), 2: (7, 6)}) == 7                 # all at the same step: no rollback
    assert t({1: (7, 6), 2: (8, 7)}) == 7                 # one finished the abandoned step: its snapshot
    assert t({1: (7, 4), 2: (8, 4)}) == 4                 # snapshots every 4 steps: back to the common one
    assert t({1: (8, 4), 2: (9, 8), 3: (8, 4)}) == 8
    with pytest.raises(ClusterError, match="no step every node can roll back to"):
        t({1: (7, -1), 2: (8, -1)})                       # --snapshot-every 0: nothing to roll back to


def test_a_ring_of_one_keeps_gradients_on_the_device_and_refuses_non_finite_ones():
    """local_step (cluster/devicetrain.py): the same loss and update as the path that
    downloads the gradients, and NaN instead of the loss when a gradient is not finite."""
    pytest.importorskip("engine")
    from engine.nn import functional as F
    from cluster import program
    from cluster.devicetrain import DeviceTrainer
    from test_device_training import digits
    xtr, ytr, _, _ = digits.load_digits()
    model = digits.build_model("mlp")
    prog = program.trace(model, F.cross_entropy, xtr[:32], ytr[:32])
    params = list(program.params_of(model).values())
    trainers = []
    for _ in range(2):
        runner = prog.bind()
        tr = DeviceTrainer(runner.device, {"name": "adam", "lr": 1e-2}, params, [], 0)
        tr.bind(runner)
        trainers.append((tr, runner))
    (local, r1), (down, r2) = trainers
    flat = np.empty(sum(down.sizes) + 1, np.float32)
    for i in range(3):
        x, y = xtr[i * 32:(i + 1) * 32], ytr[i * 32:(i + 1) * 32]
        loss = local.local_step(r1, x, y)
        local.apply(r1)
        want = down.forward_backward(r2, x, y, flat)
        down.update(flat)
        assert loss == want
    for a, b in zip(local.weights() + local.state(), down.weights() + down.state()):
        np.testing.assert_array_equal(a, b)
    before = local.weights()
    bad = xtr[:32].copy()
    bad.reshape(32, -1)[3, 5] = np.inf                # one input: Inf/NaN gradients, the loss too
    assert np.isnan(local.local_step(r1, bad, ytr[:32]))
    assert all(np.array_equal(a, b) for a, b in zip(local.weights(), before))   # nothing applied


def test_gradients_weighted_on_the_device_equal_the_host_multiply():
    """forward_backward(weight=w) scales the gradients and the loss on the device before
    they come down: the same float32 numbers as the host's multiply it replaced, step after
    step with other weights (the weight is read at each replay); the digest, computed on the
    device, is the host's checksum of the updated weights each time."""
    pytest.importorskip("engine")
    from engine.nn import functional as F
    from cluster import program
    from cluster.devicetrain import DeviceTrainer
    from test_device_training import digits
    xtr, ytr, _, _ = digits.load_digits()
    model = digits.build_model("mlp")
    runner = program.trace(model, F.cross_entropy, xtr[:32], ytr[:32]).bind()
    tr = DeviceTrainer(runner.device, {"name": "sgd", "lr": 0.1}, list(program.params_of(model).values()), [], 0)
    tr.bind(runner)
    plain, weighted = (np.empty(sum(tr.sizes) + 1, np.float32) for _ in range(2))
    for i, w in enumerate((0.25, 0.375, 1.0, 0.7)):
        x, y = xtr[i * 32:(i + 1) * 32], ytr[i * 32:(i + 1) * 32]
        loss = tr.forward_backward(runner, x, y, plain)
        assert tr.forward_backward(runner, x, y, weighted, weight=w) == loss
        assert np.abs(plain[:-1]).max() > 0
        np.testing.assert_array_equal(weighted, plain * np.float32(w))
        tr.update(weighted)                       # the weights move: the next step's gradients differ
        fresh = tr.weights()                      # the digest, on the device, is the host's value after every update
        assert tr.checksum() == hostpool.weights_checksum(fresh)


def test_the_device_digest_is_the_host_checksum_bit_for_bit():
    """Nodes on different paths (device, host optimizer, reference) compare one checksum:
    the device's kernel gives numpy's value on random weights and on NaN, infinities,
    signed zeros and subnormals, over several arrays numbered as one."""
    engine = pytest.importorskip("engine")
    from cluster.devicetrain import DeviceTrainer
    rng = np.random.default_rng(5)
    special = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-40, 3.4e38], np.float32)
    params = [rng.standard_normal((300, 77)).astype(np.float32), special,
              rng.standard_normal(1000).astype(np.float32), np.float32(rng.standard_normal((1,)))]
    tr = DeviceTrainer(engine.default_device(), {"name": "sgd", "lr": 0.1}, params, [], 0)
    assert tr.checksum() == hostpool.weights_checksum(params)
    moved = [p.copy() for p in params]
    moved[2][999] = np.nextafter(moved[2][999], np.float32(np.inf))
    assert DeviceTrainer(engine.default_device(), {"name": "sgd", "lr": 0.1}, moved, [], 0).checksum() \
        == hostpool.weights_checksum(moved) != hostpool.weights_checksum(params)


def test_a_digest_read_a_step_later_is_of_the_weights_it_was_enqueued_behind():
    """checksum_behind (a run's digest every K steps, read when the step is reported): the
    value is that of the weights when it was enqueued, not when it is read, also when the
    next one is enqueued before it was read (that one reads it first)."""
    engine = pytest.importorskip("engine")
    from cluster.devicetrain import DeviceTrainer
    rng = np.random.default_rng(6)
    params = [rng.standard_normal((200, 30)).astype(np.float32), rng.standard_normal(30).astype(np.float32)]
    tr = DeviceTrainer(engine.default_device(), {"name": "sgd", "lr": 0.1}, params, [], 0)
    first = tr.checksum_behind()
    moved = [p * np.float32(1.5) for p in params]
    for b, v in zip(tr.wbufs, moved):             # enqueued behind the first checksum
        tr.device.upload(v, dest=b)
    second = tr.checksum_behind()                  # the first is read here, before its mapping is reused
    assert second() == hostpool.weights_checksum(moved) != hostpool.weights_checksum(params)
    assert first() == hostpool.weights_checksum(params)
    assert tr.checksum() == second()


def test_overlapped_all_reduce_equals_single_process_engine(procs):
    """--overlap-mb: two nodes on one host sum their gradients through shared memory piece
    by piece while backward runs (tiny pieces here: several per step, a weight gradient cut
    into pieces computed by launches of a block of its rows each), and still equal
    engine.optim in one process."""
    pytest.importorskip("engine")
    from engine.nn import functional as F
    from test_device_training import B, STEPS, digits, local_fit
    xtr, ytr, _, _ = digits.load_digits()
    init = {k: v.numpy().copy() for k, v in digits.build_model("mlp").state_dict().items()}
    spec = {"name": "adam", "lr": 2e-3}
    want, losses, _ = local_fit(init, spec, xtr, ytr)
    nodes = start_nodes(procs, 2, extra_args=("--overlap-mb", "0.01", "--digest-every", "1"))
    model = digits.build_model("mlp")
    model.load_state_dict(init)
    res = Cluster([d["control"] for d in nodes], SECRET, heartbeat_s=0.5, missed=20, batch_multiple=32,
                  rebalance_tolerance=1.0).fit(model, F.cross_entropy, spec, (xtr, ytr), global_batch=B,
                                               max_steps=STEPS)
    assert res.step == STEPS and all(h["world"] == 2 for h in res.history)
    assert all("streamed through shared memory, " in d["proc"].log() and "summed on the devices" in d["proc"].log()
               for d in nodes)
    assert all("blocks of rows, each sent as it is done" in d["proc"].log() for d in nodes)
    np.testing.assert_allclose([h["loss"] for h in res.history], losses, rtol=2e-5, atol=2e-6)
    for k in want:   # float32: the buckets sum in another order than one buffer; Adam magnifies ulps
        np.testing.assert_allclose(res.params[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("overlap", [("--overlap-mb", "0"), ("--overlap-mb", "0.01")], ids=["checked-on-device", "overlapped"])
def test_reduced_gradients_with_nan_are_never_applied(procs, overlap):
    """Two nodes: the reduced gradients are uploaded and checked for NaN/Inf on the device
    (with --overlap-mb, uploaded piece by piece as they are summed); a step whose sum holds
    NaN is refused by both nodes before the update, and nothing is applied."""
    pytest.importorskip("engine")
    from engine.nn import functional as F
    from cluster import NonFiniteGradients
    from test_device_training import digits
    xtr, ytr, _, _ = digits.load_digits()
    x = xtr[:64].copy()
    x[5] = np.nan                             # in every batch of 64 rows
    model = digits.build_model("mlp")
    init = [v.numpy().copy() for v in model.state_dict().values()]
    nodes = start_nodes(procs, 2, extra_args=(*overlap, "--digest-every", "1"))
    cl = Cluster([d["control"] for d in nodes], SECRET, heartbeat_s=0.5, missed=20, batch_multiple=32,
                 rebalance_tolerance=1.0)
    steps = []
    with pytest.raises(NonFiniteGradients, match="refused"):
        cl.fit(model, F.cross_entropy, {"name": "sgd", "lr": 0.1}, (x, ytr[:64]), global_batch=64, max_steps=2,
               on_step=steps.append)
    assert steps == []                        # no step was applied
    assert all(("streamed through shared memory" in d["proc"].log()) == (overlap[1] != "0") for d in nodes)
    for got, want in zip(model.state_dict().values(), init):    # nor loaded into the model
        np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("nodes", [1, 2], ids=["lone", "streamed"])
def test_a_bad_step_found_while_the_next_is_enqueued_is_refused(procs, nodes):
    """A lone node runs a step ahead of its host, and streaming nodes enqueue the next
    step before they read the count of NaN/Inf in the sum (their updates gated on the
    device): a row of NaN that first comes up in step 3 stops the run there with the
    refusal, after steps 0-2 that equal the single-process engine's, loss for loss."""
    pytest.importorskip("engine")
    from engine.nn import functional as F
    from cluster import NonFiniteGradients
    from cluster.runs import DataPlan
    from test_device_training import digits, local_fit
    xtr, ytr, _, _ = digits.load_digits()
    x, y, B = xtr[:512].copy(), ytr[:512], 64
    plan = DataPlan(len(x), 0, B, [B])      # a step's global rows do not depend on the shares
    seen = set()
    for k in range(3):
        seen |= set(plan.rows_of(k, 0).tolist())
    row = next(int(r) for r in plan.rows_of(3, 0) if r not in seen)
    x[row] = np.nan
    init = {k: v.numpy().copy() for k, v in digits.build_model("mlp").state_dict().items()}
    spec = {"name": "adam", "lr": 2e-3}
    _, losses, _ = local_fit(init, spec, x, y, batch=B, steps=3)
    model = digits.build_model("mlp")
    model.load_state_dict(init)
    started = start_nodes(procs, nodes, extra_args=("--overlap-mb", "0.01") if nodes > 1 else ())
    steps = []
    with pytest.raises(NonFiniteGradients, match="step 3"):
        Cluster([d["control"] for d in started], SECRET, heartbeat_s=0.5, missed=20, report_s=0, batch_multiple=32,
                rebalance_tolerance=1.0).fit(model, F.cross_entropy, spec, (x, y), global_batch=B, max_steps=8,
                                             on_step=steps.append)
    np.testing.assert_allclose([h["loss"] for h in steps], losses, rtol=2e-5, atol=2e-6)
    assert all(h["world"] == nodes for h in steps)
    if nodes > 1:
        assert all("summed on the devices" in d["proc"].log() for d in started)


def test_streaming_nodes_log_where_their_steps_went_on_the_device(procs):
    """ENGINE_NODE_TIMELINE=1: every 50 streamed steps a node logs, beside its host phases,
    when the step's events ended on the device (ms from the step's start): the first and
    last pieces computed, copied down and their peers' values up, the sums counted, the
    update, then those three times for every piece.  Each comes after what it waits for."""
    pytest.importorskip("engine")
    import re
    from engine.nn import functional as F
    from test_device_training import digits
    xtr, ytr, _, _ = digits.load_digits()
    nodes = start_nodes(procs, 2, extra_args=("--overlap-mb", "0.01", "--digest-every", "0"), ENGINE_NODE_TIMELINE="1")
    Cluster([d["control"] for d in nodes], SECRET, heartbeat_s=0.5, missed=20, batch_multiple=32,
            rebalance_tolerance=1.0).fit(digits.build_model("mlp"), F.cross_entropy, {"name": "sgd", "lr": 0.05},
                                         (xtr, ytr), global_batch=64, epochs=10, max_steps=52)
    for d in nodes:
        line = next(ln for ln in d["proc"].log().splitlines() if "on the device, ms from the step's start" in ln)
        ends, per_piece = line.split("on the device")[1].split("; per piece computed / down / up: ")
        v = [float(x) for x in re.findall(r" (-?[\d.]+|nan)(?:,|$)", ends)]
        assert len(v) == 8 and all(np.isfinite(v)), line
        first_c, first_d, first_u, last_c, last_d, last_u, summed, updated = v
        assert 0 <= first_c <= first_d and first_c <= last_c <= last_d, line
        assert max(first_u, last_u) <= summed <= updated, line
        pieces = [[float(x) for x in p.split("/")] for p in per_piece.split(", ")]
        assert len(pieces) > 2 and pieces[0] == [first_c, first_d, first_u] and pieces[-1] == [last_c, last_d, last_u]
        for c, d, u in pieces:     # each piece goes down once computed, and up before the sums
            assert c <= d and u <= summed, line


def test_each_gradient_is_downloaded_after_the_last_launch_that_writes_it():
    """A streamed step downloads a piece once the launch that finishes its gradients has
    run: final_launches names, per gradient output, a launch that writes it and after
    which none does."""
    pytest.importorskip("engine")
    from engine import launch
    from engine import realize as rz
    from engine.nn import functional as F
    from cluster import program
    from cluster.devicetrain import DeviceTrainer
    from test_device_training import digits
    xtr, ytr, _, _ = digits.load_digits()
    model = digits.build_model("mlp")
    runner = program.trace(model, F.cross_entropy, xtr[:32], ytr[:32]).bind()
    tr = DeviceTrainer(runner.device, {"name": "adam", "lr": 1e-2}, list(program.params_of(model).values()), [], 0)
    tr.bind(runner)
    tr.forward_backward(runner, xtr[:32], ytr[:32], np.empty(sum(tr.sizes) + 1, np.float32))   # captures
    final = tr.final_launches(runner)
    items = runner.step.items
    for i, t in enumerate(runner.step.outs[1:]):
        buf = rz.buffer_of(t.node)
        writes = [k for k, it in enumerate(items) if isinstance(it, launch.Launch) and any(a is buf for a in it.args)]
        assert writes and final[i] == writes[-1], (i, final[i], writes)
    assert [final[i] for i in tr.gradient_order(runner)] == sorted(final)
    # the step program schedules the last layer's gradients first (engine/export.py): the
    # all-reduce of each can start while the device computes the earlier layers'
    assert tr.gradient_order(runner) == list(reversed(range(len(final))))


def test_a_node_joins_an_autonomous_run_at_a_halted_step_boundary(procs):
    """No sync_every: add() while the nodes run makes the driver halt them (the vote in
    the all-reduce), admit the newcomer at the step they all stopped at, and run on with
    three; every step is in the history once and the result is the single-process one."""
    nodes = start_nodes(procs, 3)
    cl = Cluster([n["control"] for n in nodes[:2]], SECRET, heartbeat_s=0.5, missed=20, report_s=0,
                 rebalance_tolerance=1.0)
    steps = 120
    res = cl.fit(ReferenceMLP([64, 96, 10]), None, SPEC, (XTR, YTR), global_batch=48, epochs=10, max_steps=steps,
                 on_step=lambda rec: rec["step"] == 3 and cl.add(nodes[2]["control"]))
    worlds = [h["world"] for h in res.history]
    assert res.step == steps and [h["step"] for h in res.history] == list(range(1, steps + 1))
    joined = worlds.index(3)
    assert joined >= 3 and worlds == [2] * joined + [3] * (steps - joined), worlds
    assert any("joins at step" in e["text"] for e in res.events), res.events
    want = reference_fit(ReferenceMLP([64, 96, 10]), SPEC, XTR, YTR, 48, steps)
    for k in want:
        np.testing.assert_allclose(res.params[k], want[k], rtol=1e-3, atol=1e-4)


def test_weights_that_drift_apart_stop_the_run(procs):
    """Checksums travel in the progress reports (--digest-every 1 here): when one node's
    weights differ from the others' after a step, fit raises WeightsDiverged, not retried."""
    from pathlib import Path
    from cluster.driver import WeightsDiverged
    nodes = start_nodes(procs, 1, extra_args=("--digest-every", "1")) + start_nodes(
        procs, 1, extra_args=("--digest-every", "1"), entry=(str(Path(__file__).with_name("drifting_node.py")),))
    with pytest.raises(WeightsDiverged, match="after step 3: weights diverged"):
        Cluster([n["control"] for n in nodes], SECRET, heartbeat_s=0.5, missed=20).fit(
            ReferenceMLP([64, 16, 10]), None, SPEC, (XTR, YTR), global_batch=32, epochs=10**4, max_steps=10**6)
    # the failed fit stopped its run: the nodes serve the next job at once, not after 10^6 steps
    t0 = time.monotonic()
    res = Cluster([nodes[0]["control"]], SECRET, heartbeat_s=0.5, missed=20).fit(
        ReferenceMLP([64, 16, 10]), None, SPEC, (XTR, YTR), global_batch=32, max_steps=5)
    assert res.step == 5 and time.monotonic() - t0 < 20


def test_engine_ring_rolls_back_to_its_common_device_snapshot_after_a_kill(procs):
    """Device path, snapshots every 4 steps: a node killed while three run on their own;
    the survivors go back to a step both reach (their common snapshot, or where they
    stand) and re-run from there; the weights equal engine.optim in one process."""
    pytest.importorskip("engine")
    from engine import optim
    from engine.nn import functional as F
    from engine.tensor import tensor
    from cluster.runs import epoch_order
    from test_device_training import digits
    xtr, ytr, _, _ = digits.load_digits()
    init = {k: v.numpy().copy() for k, v in digits.build_model("mlp").state_dict().items()}
    steps, B = 30, 96
    model = digits.build_model("mlp")
    model.load_state_dict(init)
    opt = optim.Adam(model.parameters(), lr=2e-3)
    for s in range(steps):
        e, i = divmod(s, len(xtr) // B)
        idx = epoch_order(len(xtr), 0, e)[i * B:(i + 1) * B]
        opt.zero_grad()
        F.cross_entropy(model(tensor(xtr[idx])), tensor(ytr[idx])).backward()
        opt.step()
    want = {k: v.numpy() for k, v in model.state_dict().items()}
    nodes = start_nodes(procs, 3, throttle={1: 3}, extra_args=("--snapshot-every", "4"))
    victim = nodes[1]["proc"]
    model = digits.build_model("mlp")
    model.load_state_dict(init)
    cl = Cluster([n["control"] for n in nodes], SECRET, heartbeat_s=0.25, missed=6, batch_multiple=32,
                 rebalance_tolerance=1.0, report_s=0)
    res = cl.fit(model, F.cross_entropy, {"name": "adam", "lr": 2e-3}, (xtr, ytr), global_batch=B, epochs=3,
                 max_steps=steps, on_step=lambda rec: rec["step"] == 5 and victim.send_signal(signal.SIGKILL))
    assert victim.wait(5) == -signal.SIGKILL
    assert res.step == steps and [h["step"] for h in res.history] == list(range(1, steps + 1))
    assert res.history[0]["world"] == 3 and res.history[-1]["world"] == 2
    for k in want:
        np.testing.assert_allclose(res.params[k], want[k], rtol=1e-3, atol=1e-4, err_msg=k)
