"""Offline-compilation support: a compiled step's kernels as one .cl bundle + manifest,
and a precompiled program binary loaded back in place of the source (no build)."""
import json
import os
import subprocess
import sys

import numpy as np
import pyopencl as cl

import engine
from engine.nn import functional as F


def _traced_step(tmp_path):
    engine.manual_seed(1)
    model = engine.nn.Sequential(engine.nn.Linear(10, 7), engine.nn.GELU(), engine.nn.Linear(7, 3))
    opt = engine.optim.Adam(model.parameters(), lr=0.01)

    step = engine.training_step(model, F.cross_entropy, opt)
    rng = np.random.default_rng(0)
    step(engine.tensor(rng.normal(size=(5, 10)).astype(np.float32)), engine.tensor(rng.integers(0, 3, 5)))
    return step


def test_bundle_is_one_program_with_a_complete_manifest(tmp_path):
    step = _traced_step(tmp_path)
    manifest = step.export_bundle(tmp_path / "b")
    names = {k["name"] for k in manifest["kernels"]}
    assert len(manifest["launches"]) == len(step.launches) and names == {l["kernel"] for l in manifest["launches"]}
    for k in manifest["kernels"]:
        assert k["args"] and all(a["role"] in ("out", "in", "var", "seed", "offset") for a in k["args"])
    # the whole file builds as a single program, as an offline compiler would take it
    dev = engine.default_device()
    prog = cl.Program(dev.context, (tmp_path / "b" / "kernels.cl").read_text()).build()
    assert {k.function_name for k in prog.all_kernels()} == names


def test_precompiled_binary_replaces_the_source(tmp_path):
    step = _traced_step(tmp_path)
    step.export_bundle(tmp_path / "b")
    dev = engine.default_device()
    prog = cl.Program(dev.context, (tmp_path / "b" / "kernels.cl").read_text()).build()
    (tmp_path / "b" / "kernels.bin").write_bytes(prog.get_info(cl.program_info.BINARIES)[0])
    code = f"""
import json, numpy as np, engine
from engine.bundle import load_bundle
from engine.nn import functional as F
dev = engine.default_device()
n = load_bundle(dev, {str(tmp_path / 'b')!r}, open({str(tmp_path / 'b' / 'kernels.bin')!r}, 'rb').read())
engine.manual_seed(1)
model = engine.nn.Sequential(engine.nn.Linear(10, 7), engine.nn.GELU(), engine.nn.Linear(7, 3))
opt = engine.optim.Adam(model.parameters(), lr=0.01)
rng = np.random.default_rng(0)
x, y = engine.tensor(rng.normal(size=(5, 10)).astype(np.float32)), engine.tensor(rng.integers(0, 3, 5))
opt.zero_grad(); loss = F.cross_entropy(model(x), y); loss.backward(); opt.step()
print(json.dumps({{"registered": n, "loss": loss.item(), **dev.stats}}))
"""
    env = dict(os.environ, ENGINE_CACHE_DIR=str(tmp_path / "empty-cache"))
    out = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    check=True).stdout.strip().splitlines()[-1])
    assert out["registered"] >= 5
    # every kernel of the step came from the binary: nothing was compiled, nothing read from the disk cache
    assert out["builds"] == 0 and out["disk_hits"] == 0 and out["memory_hits"] >= out["registered"]
    assert np.isfinite(out["loss"])
