"""The tuning database: `search` measures candidate tiles, stores the best per device
(platform, name, driver), and later GEMMs use it."""
import json

import numpy as np
import pytest

import engine
from engine import autotune, tune


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
        assert tune.gemm_tile(64, 64, 64, dev) == tune.DEFAULTS[dev.kind if dev.kind in tune.DEFAULTS else "other"]
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
    assert tile == tune.DEFAULTS[dev.kind if dev.kind in tune.DEFAULTS else "other"]
    _matmul_ok()
    # entry by entry: a valid entry for this device is still used
    (tmp_path / "tuning.json").write_text(json.dumps({tune.device_key(dev): {"gemm": {"R": 4, "W": 16}}}))
    tune._db_cache.clear()
    if dev.kind != "gpu":
        assert tune.gemm_tile(64, 64, 64, dev) == (4, 16)
    tune._db_cache.clear()
