"""Offline-compilation support: a compiled step's kernels as one .cl bundle + manifest,
and a precompiled program binary loaded back in place of the source (no build), only
when the manifest records it for that source, options and device."""
import json
import os
import subprocess
import sys

import numpy as np
import pyopencl as cl
import pytest

import engine
from engine.bundle import BundleError, add_binary, load_bundle
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
    binary = prog.get_info(cl.program_info.BINARIES)[0]
    (tmp_path / "b" / "kernels.bin").write_bytes(binary)
    add_binary(tmp_path / "b", binary, dev)
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


def _binary_of(dev, source):
    return cl.Program(dev.context, source).build().get_info(cl.program_info.BINARIES)[0]


def test_unrecorded_truncated_swapped_or_foreign_binaries_are_refused(tmp_path):
    """Issue 12: a binary of other source gave NaN, a truncated one segfaulted. Now the
    manifest's hashes decide before the driver sees the bytes."""
    step = _traced_step(tmp_path)
    step.export_bundle(tmp_path / "b")
    d = engine.default_device()
    dev = engine.runtime.Device(d.cl_device, d.index)   # bundled kernels must not replace the default's
    good = _binary_of(dev, (tmp_path / "b" / "kernels.cl").read_text())
    other = _binary_of(dev, "__kernel void mao_other(__global float* o) { o[0] = 42.0f; }")
    with pytest.raises(BundleError, match="does not record"):          # never recorded
        load_bundle(dev, tmp_path / "b", good)
    add_binary(tmp_path / "b", good, dev)
    with pytest.raises(BundleError, match="does not record"):          # truncated
        load_bundle(dev, tmp_path / "b", good[: len(good) // 2])
    with pytest.raises(BundleError, match="does not record"):          # another program's binary
        load_bundle(dev, tmp_path / "b", other)
    # a recorded file swapped on disk for another program's binary
    rec = json.loads((tmp_path / "b" / "manifest.json").read_text())["binaries"][0]
    (tmp_path / "b" / rec["file"]).write_bytes(other)
    with pytest.raises(BundleError, match="does not record"):
        load_bundle(dev, tmp_path / "b")
    # recorded for this device, but kernels.cl changed since: its manifest hash catches it
    (tmp_path / "b" / rec["file"]).write_bytes(good)
    assert load_bundle(dev, tmp_path / "b") >= 5          # the recorded binary, found by the manifest
    cl_text = (tmp_path / "b" / "kernels.cl").read_text()
    (tmp_path / "b" / "kernels.cl").write_text(cl_text.replace("0.0f", "1.0f", 1))
    with pytest.raises(BundleError, match="kernels.cl does not match"):
        load_bundle(dev, tmp_path / "b")
    (tmp_path / "b" / "kernels.cl").write_text(cl_text)
    # recorded for another device or driver: refused, naming what differs
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    m["binaries"][0]["device"]["driver"] = "0.0-other"
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="device"):
        load_bundle(dev, tmp_path / "b", good)


def test_a_bundle_the_compiler_crashes_on_is_an_error_not_a_dead_process(tmp_path):
    """Loading a bundle from source builds it in the runtime's child and launches each of
    its kernels there once (from the manifest's arguments and sizes); a compiler crash on
    it (injected) is a BuildError in the user's process, which goes on."""
    step = _traced_step(tmp_path)
    step.export_bundle(tmp_path / "b")
    code = f"""
import engine, numpy as np
from engine.bundle import load_bundle
d = engine.default_device()
try:
    load_bundle(d, {str(tmp_path / 'b')!r})
    print("loaded")
except engine.BuildError as e:
    print("BuildError", "crashed" in str(e))
print((engine.tensor(np.ones(3, np.float32)) * 2.0).numpy().tolist())
"""
    env = dict(os.environ, ENGINE_CACHE_DIR=str(tmp_path / "cache"), ENGINE_BUILD_FAULT="abort:---- kernel",
               ENGINE_SAFE_BUILD="launch")
    # the fault needle is in kernels.cl's separators, so only the whole-bundle build crashes
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split("\n")[:2] == ["BuildError True", "[2.0, 2.0, 2.0]"], p.stdout
    # remembered for the device: the same source is refused at once, not sent to the compiler again
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.startswith("BuildError True"), p.stderr[-2000:]
    # without the fault (and a fresh cache) the same bundle loads, each kernel launched once in the child
    env.update(ENGINE_BUILD_FAULT="", ENGINE_CACHE_DIR=str(tmp_path / "cache2"))
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.startswith("loaded"), p.stderr[-2000:]
