"""engine.compile: a replayed step equals the eager one; the program cache works across
processes; build failures and template errors are reported with what is needed to act."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import engine
import kernels
from engine.nn import functional as F


def _setup(seed):
    engine.manual_seed(seed)
    model = engine.nn.Sequential(engine.nn.Linear(12, 16), engine.nn.ReLU(), engine.nn.Dropout(0.0),
                                 engine.nn.Linear(16, 4))
    opt = engine.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return model, opt


def test_compiled_step_matches_eager(rng):
    batches = [(rng.normal(size=(8, 12)).astype(np.float32), rng.integers(0, 4, size=8)) for _ in range(5)]
    results = []
    for compiled in (False, True):
        model, opt = _setup(11)
        run = engine.training_step(model, F.cross_entropy, opt, compiled=compiled)
        losses = [run(engine.tensor(x), engine.tensor(y)).item() for x, y in batches]
        results.append((losses, [p.numpy() for p in model.parameters()]))
        if compiled:
            assert run.replays == len(batches) - 1 and len(run.launches) > 3
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_second_process_reuses_built_programs(tmp_path):
    code = ("import time, json, engine, numpy as np\n"
            "t0 = time.perf_counter()\n"
            "x = engine.tensor(np.ones((5, 9), np.float32))\n"
            "w = engine.tensor(np.ones((9, 3), np.float32))\n"
            "v = ((x @ w).relu() * 0.731 + 0.113).sum(1).numpy()\n"
            "d = engine.default_device()\n"
            "print(json.dumps({**d.stats, 'first_s': time.perf_counter() - t0}))\n")
    env = dict(os.environ, ENGINE_CACHE_DIR=str(tmp_path))
    runs = [json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1]) for _ in range(2)]
    assert runs[0]["builds"] >= 2 and runs[0]["disk_hits"] == 0
    assert runs[1]["builds"] == 0 and runs[1]["disk_hits"] == runs[0]["builds"]


def test_template_missing_parameter_fails():
    with pytest.raises(kernels.TemplateParameterError, match="missing a parameter"):
        kernels.render("elementwise", name="k", numel=4)


def test_build_failure_carries_log_template_params_and_source(tmp_path, monkeypatch):
    from engine.codegen import KernelSpec
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path))
    spec = KernelSpec("mao_broken", "elementwise", {"numel": 1}, "__kernel void mao_broken(__global float* o) { o[0] = nope; }")
    with pytest.raises(engine.BuildError) as ei:
        engine.default_device().build(spec)
    msg = str(ei.value)
    assert "nope" in msg and "template: elementwise" in msg and '"numel": 1' in msg
    path = msg.split("source saved to: ")[1].splitlines()[0]
    assert open(path).read() == spec.source


def test_step_program_roundtrip_matches_direct_gradients(rng):
    engine.manual_seed(2)
    model = engine.nn.Sequential(engine.nn.Linear(6, 5), engine.nn.ReLU(), engine.nn.Linear(5, 3))
    x, y = rng.normal(size=(4, 6)).astype(np.float32), rng.integers(0, 3, size=4)
    prog = engine.trace_training_step(model, F.cross_entropy, x, y)
    wire = json.loads(json.dumps(prog.to_json()))
    runner = engine.StepProgram.from_json(wire).bind()
    params = [p.numpy() for p in model.parameters()]
    loss, grads = runner.run(params, x, y)
    direct = F.cross_entropy(model(engine.tensor(x)), engine.tensor(y))
    direct.backward()
    assert abs(loss - direct.item()) < 1e-6
    for g, p in zip(grads, model.parameters()):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-5, atol=1e-7)
    # new weights, same compiled program
    loss2, _ = runner.run([p * 0.5 for p in params], x, y)
    assert loss2 != loss
    bad = dict(wire, v=99)
    with pytest.raises(ValueError, match="version"):
        engine.StepProgram.from_json(bad)


def test_state_dict_save_load(tmp_path, rng):
    m = engine.nn.Linear(4, 3)
    engine.save(m.state_dict(), tmp_path / "w.safetensors")
    m2 = engine.nn.Linear(4, 3)
    m2.load_state_dict(engine.load(tmp_path / "w.safetensors"))
    for a, b in zip(m.parameters(), m2.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_step_program_is_device_neutral(rng):
    """Traced where the GEMM tiles are 128 x 128 (as on a GPU), bound where they are not:
    the JSON carries plain matmul operands and each device lays out its own panels."""
    from engine import tune
    engine.manual_seed(4)
    model = engine.nn.Sequential(engine.nn.Linear(9, 20), engine.nn.ReLU(), engine.nn.Linear(20, 3))
    x, y = rng.normal(size=(6, 9)).astype(np.float32), rng.integers(0, 3, size=6)
    with tune.override(128, 128):
        prog = engine.trace_training_step(model, F.cross_entropy, x, y)
    doc = json.loads(json.dumps(prog.to_json()))
    assert all("arg" not in n for n in doc["nodes"] if n["op"] == "MATMUL")
    runner = engine.StepProgram.from_json(doc).bind()
    loss, grads = runner.run([p.numpy() for p in model.parameters()], x, y)
    direct = F.cross_entropy(model(engine.tensor(x)), engine.tensor(y))
    direct.backward()
    assert abs(loss - direct.item()) < 1e-6
    for g, p in zip(grads, model.parameters()):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_memory_plan_reuses_dead_intermediates(rng):
    ws = [engine.tensor(rng.normal(size=(32, 32)).astype(np.float32)) for _ in range(6)]

    def chain(x):
        for w in ws:
            x = (x @ w).tanh()
        return x
    step = engine.compile(chain)
    x = rng.normal(size=(16, 32)).astype(np.float32)
    out = step(engine.tensor(x)).numpy()
    ref = x.astype(np.float64)
    for w in ws:
        ref = np.tanh(ref @ w.numpy())
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)   # six chained float32 GEMMs
    from engine.runtime import Buffer
    outs = [launch.args[0] for launch in step.launches]
    assert all(isinstance(b, Buffer) for b in outs)
    # 6 GEMMs and their operand packing (none on a CPU, which reads these B in place; A and
    # B on a GPU) write 6 or 18 results, but few are alive at once
    gemms = [launch for launch in step.launches if launch.spec.template.startswith("gemm")]
    assert len(gemms) == 6 and len(outs) == 6 * (3 if step.device.kind == "gpu" else 1)
    assert len({id(b) for b in outs}) <= 5
    np.testing.assert_allclose(step(engine.tensor(x)).numpy(), out, rtol=1e-6)


def test_replays_keep_each_launch_s_own_arguments_through_changes(rng):
    """launch.replay enqueues every launch through a kernel object of its own and sets only
    the arguments that changed since its last replay: two launches of one built kernel
    keep their own buffers, and new inputs, a weight changed in place and a new learning
    rate all reach the replayed step."""
    from engine import launch
    w = engine.tensor(rng.normal(size=(6, 5)).astype(np.float32), requires_grad=True)
    opt = engine.optim.SGD([w], lr=0.1)

    def step(a, b):
        opt.zero_grad()
        loss = ((a @ w).relu().sum() + (b @ w).relu().sum()) * 0.5
        loss.backward()
        opt.step()
        return loss
    run = engine.compile(step)
    ref = w.numpy().astype(np.float64)
    for k in range(4):
        a, b = (rng.normal(size=(3, 6)).astype(np.float32) for _ in range(2))
        if k == 2:          # the user changes the weight in place and the learning rate
            with engine.no_grad():
                w.mul_(0.5)
            ref *= 0.5
            for g in opt.param_groups:
                g["lr"] = 0.03
        lr = 0.1 if k < 2 else 0.03
        want = 0.5 * (np.maximum(a @ ref, 0).sum() + np.maximum(b @ ref, 0).sum())
        got = run(engine.tensor(a), engine.tensor(b)).item()
        np.testing.assert_allclose(got, want, rtol=1e-5)
        grad = 0.5 * (a.T @ (a @ ref > 0) + b.T @ (b @ ref > 0))
        ref = ref - lr * grad
        np.testing.assert_allclose(w.numpy(), ref, rtol=1e-5, atol=1e-6)
    launches = run.launches
    assert all(isinstance(it, launch.Launch) and it.bound for it in launches)
    assert len({id(it.bound.kernel) for it in launches}) == len(launches)
    assert len({id(it.ck) for it in launches}) < len(launches)    # a @ w and b @ w: one built kernel
