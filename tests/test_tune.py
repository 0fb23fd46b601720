"""The tuning database: `search` measures candidate tiles (CPUs), `search_variants` the
tiled GEMM's variants per shape class (GPUs); the best is stored per device (platform,
name, driver) and later GEMMs use it; entries that are not usable are ignored."""
import json

import numpy as np
import pytest

import engine
from engine import autotune, runtime, tune


def test_search_records_the_best_tile_and_matmul_uses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path))
    tune._db_cache.clear()
    dev = engine.default_device()
    lines = []
    candidates = [(64, 64), (128, 128)] if dev.kind == "gpu" else [(4, 16), (8, 32)]
    res = autotune.search(dev, candidates=candidates, shapes=[(24, 40, 16)], repeat=1,
                          progress=lines.append)
    assert len(res["results"]) == 2 and len(lines) == 2 and all(r["gflops"] > 0 for r in res["results"])
    best = res["best"]
    entry = tune.load_db()[tune.device_key(dev)]
    assert entry["gemm"] == {"R": best["R"], "W": best["W"]}
    tune._db_cache.clear()          # as a new process would: read from disk
    assert tune.gemm_tile(64, 64, 64, dev) == (best["R"], best["W"])
    a, b = np.random.rand(33, 17).astype(np.float32), np.random.rand(17, 50).astype(np.float32)
    np.testing.assert_allclose((engine.tensor(a) @ engine.tensor(b)).numpy(), a @ b, rtol=1e-5)
    tune._db_cache.clear()


def _default_tile(dev, M=64, N=64, K=64):
    if dev.kind == "gpu":
        v = tune.GPU_VARIANTS[tune.shape_class(M, N, K)]
        return v["TM"], v["TN"]
    return tune.DEFAULTS[dev.kind if dev.kind in tune.DEFAULTS else "other"]


def _matmul_ok():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((37, 19)).astype(np.float32), rng.standard_normal((19, 70)).astype(np.float32)
    np.testing.assert_allclose((engine.tensor(a) @ engine.tensor(b)).numpy(), a @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("content", [
    "[1, 2, 3]",                                   # a list, not a mapping (gave AttributeError)
    "{not json",
    '"just a string"',
])
def test_corrupt_tuning_file_is_ignored_with_a_warning(tmp_path, monkeypatch, content):
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path))
    tune._db_cache.clear()
    tune._warned.clear()
    (tmp_path / "tuning.json").write_text(content)
    dev = engine.default_device()
    with pytest.warns(RuntimeWarning, match="tuning database"):
        assert tune.gemm_tile(64, 64, 64, dev) == _default_tile(dev)
    _matmul_ok()
    tune._db_cache.clear()


@pytest.mark.parametrize("gemm", [
    {"R": 8, "W": 36},                             # W not a multiple of the vector width (gave wrong matmuls)
    {"R": 0, "W": 32}, {"R": -8, "W": 32}, {"R": 8.5, "W": 32}, {"R": "8", "W": 32}, {"R": 8, "W": 4096},
    {"R": 8}, None, [8, 32],
])
def test_invalid_tuning_entry_is_rejected_and_defaults_used(tmp_path, monkeypatch, gemm):
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path))
    tune._db_cache.clear()
    tune._warned.clear()
    dev = engine.default_device()
    other = {"gemm": {"R": 4, "W": 16}}
    (tmp_path / "tuning.json").write_text(json.dumps({tune.device_key(dev): {"gemm": gemm}, "some|other|device": other}))
    with pytest.warns(RuntimeWarning, match="ignored, defaults used"):
        tile = tune.gemm_tile(64, 64, 64, dev)
    assert tile == _default_tile(dev)
    _matmul_ok()
    # entry by entry: a valid entry for this device is still used
    (tmp_path / "tuning.json").write_text(json.dumps({tune.device_key(dev): {"gemm": {"R": 4, "W": 16}}}))
    tune._db_cache.clear()
    if dev.kind != "gpu":
        assert tune.gemm_tile(64, 64, 64, dev) == (4, 16)
    tune._db_cache.clear()


# --- GPU variants per shape class (run here on the default device, planned for as a GPU)

def _as_gpu(tiled_max=128):
    d = engine.default_device()
    dev = runtime.Device(d.cl_device, d.index)
    dev.kind = "gpu"
    dev._caps = dict(d.capabilities(), tiled_max=tiled_max)
    return dev


@pytest.fixture
def fresh_db(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path))
    tune._db_cache.clear()
    tune._warned.clear()
    yield tmp_path
    tune._db_cache.clear()


def test_shape_classes():
    assert tune.shape_class(1024, 4096, 4096) == "large"
    assert tune.shape_class(4096, 4096, 10) == "large"
    assert tune.shape_class(128, 512, 784) == "small"
    assert tune.shape_class(64, 64, 4096, batch=64) == "large"        # many products fill the device too
    assert tune.shape_class(1024, 10, 4096) == tune.shape_class(4096, 10, 1024) == "narrow"
    assert tune.shape_class(10, 4096, 1024) == "short"


def test_variant_space_is_valid_and_starts_at_each_default():
    for cls in tune.SHAPE_CLASSES:
        space = tune.variant_space(cls)
        assert space[0] == tune.GPU_VARIANTS[cls]
        assert len({tuple(sorted(v.items())) for v in space}) == len(space) > 1000
        assert all(tune.variant_problem(v) is None for v in space)
        knobs_changed = [sum(v[k] != space[0][k] for k in v) for v in space]
        assert knobs_changed == sorted(knobs_changed)       # nearest the default first


def test_gpu_defaults_fit_their_tiles_and_a_capped_tile_gets_the_first_version(fresh_db):
    dev = _as_gpu()
    for M, N, K in [(1024, 4096, 4096), (128, 512, 784), (1024, 10, 4096), (10, 4096, 1024)]:
        v = tune.GPU_VARIANTS[tune.shape_class(M, N, K)]
        assert tune.gemm_tile(M, N, K, dev) == (v["TM"], v["TN"])
        assert tune.gemm_variant(M, N, K, 1, dev) == {k: x for k, x in v.items() if k not in ("TM", "TN")}
    small = _as_gpu(tiled_max=64)          # the probe found 128-wide tiles do not build
    assert tune.gemm_tile(1024, 4096, 4096, small) == (64, 64)
    assert tune.gemm_variant(1024, 4096, 4096, 1, small) == {}
    assert tune.gemm_variant(1024, 4096, 4096, 1, engine.default_device()) == {} or \
        engine.default_device().kind == "gpu"


def test_a_variant_needing_more_local_memory_than_the_device_has_gets_the_first_version(fresh_db, monkeypatch):
    """The narrow class's default declares 36 KiB of local memory; a GPU (or Oclgrind) that
    gives a work-group 32 KiB runs the template's first version (16 KiB) instead."""
    dev = _as_gpu()
    M, N, K = 1024, 10, 4096
    v = tune.GPU_VARIANTS[tune.shape_class(M, N, K)]
    assert tune.local_bytes(v) > 32 * 1024
    monkeypatch.setattr(tune, "device_local_bytes", lambda device: 48 * 1024)
    assert tune.gemm_variant(M, N, K, 1, dev) != {}
    monkeypatch.setattr(tune, "device_local_bytes", lambda device: 32 * 1024)
    assert tune.gemm_variant(M, N, K, 1, dev) == {}
    x = np.random.default_rng(3).uniform(0.5, 1.5, (M, K)).astype(np.float32)
    w = np.random.default_rng(4).uniform(-1, 1, (K, N)).astype(np.float32)
    got = (engine.tensor(x, device=dev) @ engine.tensor(w, device=dev)).numpy()
    np.testing.assert_allclose(got, x.astype(np.float64) @ w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad", [
    {"WM": 3},                        # does not divide the tile
    {"TM": 96},                       # not a tile size
    {"KB": 64, "DBUF": 1},            # 64 KiB of local memory
    {"VW": 4, "PAD": 2},              # vector stores into padded rows would be misaligned
    {"WM": 1, "WN": 1},               # 16384 work-items in a work-group
    {"MAD": "yes"},
    {"extra": 1},
    "not a mapping",
])
def test_invalid_variant_entry_is_rejected_and_defaults_used(fresh_db, bad):
    dev = _as_gpu()
    good = tune.GPU_VARIANTS["large"]
    entry = dict(good, **bad) if isinstance(bad, dict) else bad
    with pytest.raises(ValueError):
        tune.save_variants(dev, {"large": entry}, [])
    (fresh_db / "tuning.json").write_text(json.dumps({tune.device_key(dev): {"gemm_variants": {
        "large": entry, "small": dict(tune.GPU_VARIANTS["small"], KB=8)}}}))
    with pytest.warns(RuntimeWarning, match="ignored, defaults used"):
        assert tune.gemm_variant(1024, 4096, 4096, 1, dev) == {k: x for k, x in good.items() if k not in ("TM", "TN")}
    assert tune.gemm_variant(128, 512, 784, 1, dev)["KB"] == 8      # the valid class entry is still used


def test_tune_with_a_tiny_budget_writes_a_usable_entry(fresh_db):
    dev = _as_gpu()
    lines = []
    res = autotune.search_variants(dev, shapes=[(70, 80, 33), (90, 10, 20)], budget_s=0, repeat=1,
                                   progress=lines.append)
    assert set(res["best"]) == {"small", "narrow"}
    assert res["best"]["small"] == tune.GPU_VARIANTS["small"] and res["best"]["narrow"] == tune.GPU_VARIANTS["narrow"]
    assert all(r["gflops"] > 0 for r in res["results"]) and any("narrow" in line for line in lines)
    tune._db_cache.clear()                 # as a new process would: read it from disk
    entry = tune.load_db()[tune.device_key(dev)]["gemm_variants"]
    assert entry == res["best"]
    # a later matmul of that class takes the stored variant, and is right
    stored = dict(tune.GPU_VARIANTS["small"], KB=8, DBUF=0)
    tune.save_variants(dev, {"small": stored}, [])
    tune._db_cache.clear()
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((70, 33)).astype(np.float32), rng.standard_normal((33, 80)).astype(np.float32)
    got = (engine.tensor(a, device=dev) @ engine.tensor(b, device=dev)).numpy()
    np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)
    specs = [ck.spec for ck in dev._programs.values() if ck.spec.template == "gemm_tiled"]
    assert any(s.params["KB"] == 8 and s.params["DBUF"] == 0 for s in specs)
