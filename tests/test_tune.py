"""The tuning database: `search` measures candidate tiles, stores the best per device
(platform, name, driver), and later GEMMs use it."""
import numpy as np

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
