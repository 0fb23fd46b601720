import json

import numpy as np
import pytest

from cluster_helpers import SECRET


def run_ring(procs, tmp_path, n, length, sizes=None, mode="ring", modes=None):
    ranks = [procs.start(["tests/cluster/ring_worker.py", str(r), str(length), str(tmp_path / f"r{r}.npy"),
                          SECRET, str((sizes or {}).get(r, length)), (modes or {}).get(r, mode)]) for r in range(n)]
    peers = [p.stdout.readline().strip() for p in ranks]
    assert all(e.startswith("tcp://127.0.0.1:") for e in peers), peers
    for p in ranks:
        p.stdin.write(json.dumps(peers) + "\n")
        p.stdin.flush()
    return [(p.wait(timeout=60), p.log()) for p in ranks]


SMALL = [(2, 1), (2, 10001), (3, 2), (3, 7919), (4, 4099), (5, 3), (8, 12345)]


@pytest.mark.parametrize("n,length,mode", [(n, k, "ring") for n, k in SMALL] + [(n, k, "gather") for n, k in SMALL] + [
    # engine-node's settings: two I/O threads, ~4 segments a chunk
    (3, 1_000_003, "production"), (4, 600_001, "production")])
def test_ring_allreduce_sums_and_ranks_agree_bitwise(procs, tmp_path, n, length, mode):
    results = run_ring(procs, tmp_path, n, length, mode=mode)
    assert [rc for rc, _ in results] == [0] * n, results
    outs = [np.load(tmp_path / f"r{r}.npy", allow_pickle=False) for r in range(n)]
    want = sum(np.random.default_rng(r).standard_normal(length).astype(np.float32).astype(np.float64)
               for r in range(n))
    np.testing.assert_allclose(outs[0], want, rtol=1e-5, atol=1e-5)
    for o in outs[1:]:
        assert o.tobytes() == outs[0].tobytes()     # bitwise identical, not just close


def test_ring_allreduce_refuses_mismatched_sizes(procs, tmp_path):
    results = run_ring(procs, tmp_path, 3, 1000, sizes={1: 999})
    assert all(rc != 0 for rc, _ in results)
    assert any("PlanMismatch" in err and "sizes" in err for _, err in results), results


def test_ranks_that_would_reduce_differently_refuse_before_moving_data(procs, tmp_path):
    results = run_ring(procs, tmp_path, 3, 1000, modes={0: "gather", 1: "ring", 2: "gather"})
    assert all(rc != 0 for rc, _ in results)
    assert any("PlanMismatch" in err and "algo" in err for _, err in results), results
