"""The on-disk program cache is not trusted blindly (issue 12, finding 4): each entry
carries the hashes of its source, options, device and binary, checked when loaded; an
entry swapped in from another program, one whose binary was replaced, a truncated one
or plain garbage is rejected (warning, counted in stats) and rebuilt, never run."""
import os

import numpy as np
import pyopencl as cl
import pytest

import engine
from engine import program_cache, runtime

SRC = "__kernel void mao_put_{n}(__global float* o) {{ o[get_global_id(0)] = {v}f; }}"


def _fresh_device(monkeypatch, tmp_path):
    """A new Device object for the default device: an empty memory cache, as a new process has."""
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path))
    d = engine.default_device()
    return runtime.Device(d.cl_device, d.index)


def _run(dev, spec):
    ck = dev.build(spec)
    buf = cl.Buffer(dev.context, cl.mem_flags.READ_WRITE, 16)
    ck.kernel(dev.queue, (4,), None, buf)
    out = np.empty(4, np.float32)
    cl.enqueue_copy(dev.queue, out, buf, is_blocking=True)
    return out.tolist()


def _specs():
    return (program_cache._BundledSpec("mao_put_a", SRC.format(n="a", v="1.0")),
            program_cache._BundledSpec("mao_put_b", SRC.format(n="b", v="2.0")))


def _entry(dev, spec):
    return os.path.join(runtime.cache_dir(), "programs", dev._cache_key(spec.source, "") + ".bin")


@pytest.mark.parametrize("damage", ["swap_entry", "swap_binary", "truncate", "garbage", "empty"])
def test_bad_entries_are_rebuilt_never_run(monkeypatch, tmp_path, damage):
    a, b = _specs()
    dev = _fresh_device(monkeypatch, tmp_path)
    assert _run(dev, a) == [1.0] * 4 and _run(dev, b) == [2.0] * 4 and dev.stats["builds"] == 2
    pa, pb = _entry(dev, a), _entry(dev, b)
    with open(pa, "rb") as f:
        entry_a = f.read()
    with open(pb, "rb") as f:
        entry_b = f.read()
    head_b, _, bin_b = entry_b.partition(b"\n")
    bin_a = entry_a.partition(b"\n")[2]
    damaged = {"swap_entry": entry_a,                         # another program's whole entry
               "swap_binary": head_b + b"\n" + bin_a,         # B's header, A's binary
               "truncate": entry_b[: len(entry_b) // 2],
               "garbage": b"\x7fELF" + os.urandom(300),
               "empty": b""}[damage]
    with open(pb, "wb") as f:
        f.write(damaged)
    dev2 = _fresh_device(monkeypatch, tmp_path)
    with pytest.warns(runtime.CacheEntryWarning, match="ignored and rebuilt"):
        got = _run(dev2, b)
    assert got == [2.0] * 4                                   # B's own value, never A's
    assert dev2.stats["rejected"] == 1 and dev2.stats["builds"] == 1 and dev2.stats["disk_hits"] == 0
    # the rebuilt entry is good again; the untouched one still loads
    dev3 = _fresh_device(monkeypatch, tmp_path)
    assert _run(dev3, b) == [2.0] * 4 and _run(dev3, a) == [1.0] * 4
    assert dev3.stats["disk_hits"] == 2 and dev3.stats["rejected"] == 0


def test_entry_for_other_options_or_device_is_not_used(monkeypatch, tmp_path):
    a, _ = _specs()
    dev = _fresh_device(monkeypatch, tmp_path)
    _run(dev, a)
    path = _entry(dev, a)
    with open(path, "rb") as f:
        head, _, binary = f.read().partition(b"\n")
    with open(path, "wb") as f:
        f.write(head.replace(b'"options": ""', b'"options": "-cl-fast-relaxed-math"') + b"\n" + binary)
    dev2 = _fresh_device(monkeypatch, tmp_path)
    with pytest.warns(runtime.CacheEntryWarning, match="options"):
        assert _run(dev2, a) == [1.0] * 4
    assert dev2.stats["rejected"] == 1
