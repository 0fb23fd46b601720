"""ENGINE_DEVICE matches what users type (issue 9): an index, an alias (pocl, nvidia, amd,
intel, oclgrind, cpu, gpu) or, case-insensitively, any part of the device's line in
`engine devices`; an unknown name lists the devices and names the variable."""
import os
import subprocess
import sys

import numpy as np
import pytest

import engine
from engine import device_selection, runtime


def _fresh_pick(monkeypatch, value):
    monkeypatch.setenv("ENGINE_DEVICE", value)
    monkeypatch.setattr(device_selection, "_default", None)
    return runtime.default_device()


def test_every_part_of_the_device_line_selects_it(monkeypatch):
    devs = engine.devices()
    d = devs[-1]
    first_with = lambda text: next(x for x in devs if text.lower() in x.selector_text())
    for part in (d.platform, d.name, d.vendor, d.driver, d.platform.upper(), d.name.lower()[3:12],
                 f"  {d.name.swapcase()} "):
        assert _fresh_pick(monkeypatch, part) is first_with(part.strip())
    assert _fresh_pick(monkeypatch, str(d.index)) is d


def test_aliases(monkeypatch):
    devs = engine.devices()
    for d in devs:
        for alias in d.aliases():
            got = _fresh_pick(monkeypatch, alias.upper())
            assert alias in got.aliases() and got.index <= d.index
    pocl = [d for d in devs if d.is_pocl]
    if pocl:   # "Portable Computing Language" does not contain "pocl"; the alias does
        assert _fresh_pick(monkeypatch, "pocl") is pocl[0] and _fresh_pick(monkeypatch, "PoCL") is pocl[0]
    assert set(runtime.DEVICE_ALIASES) == {"pocl", "nvidia", "amd", "intel", "oclgrind", "cpu", "gpu"}


def test_unknown_name_or_index_lists_devices_and_names_the_variable(monkeypatch):
    for bad in ("no-such-accelerator", "99"):
        with pytest.raises(engine.DeviceNotFound) as exc:
            _fresh_pick(monkeypatch, bad)
        msg = str(exc.value)
        assert "ENGINE_DEVICE" in msg and repr(bad) in msg
        for d in engine.devices():
            assert d.name in msg and d.platform in msg
        assert "pocl, nvidia, amd, intel, oclgrind, cpu, gpu" in msg


def test_engine_devices_and_a_typo_from_the_command_line():
    env = dict(os.environ, ENGINE_DEVICE="definitely-not-a-device")
    p = subprocess.run([sys.executable, "-m", "engine.cli", "devices"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode != 0 and "ENGINE_DEVICE='definitely-not-a-device' matches no OpenCL device" in p.stderr
    env["ENGINE_DEVICE"] = "pocl" if any(d.is_pocl for d in engine.devices()) else "0"
    p = subprocess.run([sys.executable, "-m", "engine.cli", "devices"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and "*" in p.stdout


def test_the_build_child_builds_and_runs_a_kernel_on_this_device(rng):
    """The build child (engine/_buildworker.py, OpenCL through ctypes) starts on this
    OpenCL implementation, finds the same device, builds, launches and reads back; a child
    that crashed at its start was once only seen as a warning, with every build then made
    unprotected in the user's process (Debian's PoCL beside the wheel's)."""
    import base64
    from engine import build_child
    d = engine.default_device()
    if build_child._safe_mode(d) == "off":
        pytest.skip("ENGINE_SAFE_BUILD=off: builds are not isolated")
    x = rng.uniform(-1, 1, 37).astype(np.float32)
    src = "__kernel void mao_twice_plus_one(__global float* o, __global const float* x) " \
          "{ int i = get_global_id(0); if (i < 37) o[i] = 2.0f * x[i] + 1.0f; }"
    launch = {"name": "mao_twice_plus_one", "global": [64], "local": None, "read": [0],
              "args": [["buf", 4 * 37, None], ["buf", 4 * 37, base64.b64encode(x.tobytes()).decode()]]}
    worker = build_child._BuildWorker(d)
    try:
        resp = worker.request(src, d._extra_options, [launch], timeout=120, want_binary=False)
    finally:
        worker.close()
    assert resp["ok"], resp
    got = np.frombuffer(base64.b64decode(resp["outputs"]["0:0"]), np.float32)
    np.testing.assert_allclose(got, 2.0 * x.astype(np.float64) + 1.0, rtol=1e-6)
