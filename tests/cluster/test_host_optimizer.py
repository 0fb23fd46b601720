"""The nodes' host optimizer: torch's SGD and Adam formulas against float64 numpy, and
results that do not depend on how many threads a host has (hostpool)."""
import numpy as np
import pytest

from cluster import HostOptimizer, hostpool

SHAPES = [(800, 700), (700,), (10, 800), (3,), (1,)]   # over two hostpool pieces: the pool runs


def reference(spec, params, grads_per_step):
    """float64, written straight from torch.optim.SGD / torch.optim.Adam's documentation."""
    p = [x.astype(np.float64) for x in params]
    lr, wd = spec["lr"], spec.get("weight_decay", 0.0)
    state = [None] * len(p), [np.zeros_like(x) for x in p], [np.zeros_like(x) for x in p]
    for t, grads in enumerate(grads_per_step, start=1):
        for i, g in enumerate(grads):
            g = g.astype(np.float64) + wd * p[i]
            if spec["name"] == "sgd":
                mom = spec.get("momentum", 0.0)
                if mom:
                    state[0][i] = g.copy() if t == 1 else mom * state[0][i] + g
                    g = g + mom * state[0][i] if spec.get("nesterov") else state[0][i]
                p[i] = p[i] - lr * g
            else:
                b1, b2 = spec.get("betas", (0.9, 0.999))
                m, v = state[1], state[2]
                m[i] = b1 * m[i] + (1 - b1) * g
                v[i] = b2 * v[i] + (1 - b2) * g * g
                denom = np.sqrt(v[i]) / np.sqrt(1 - b2 ** t) + spec.get("eps", 1e-8)
                p[i] = p[i] - lr / (1 - b1 ** t) * m[i] / denom
    return p


SPECS = [{"name": "sgd", "lr": 0.1}, {"name": "sgd", "lr": 0.05, "momentum": 0.9},
         {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
         {"name": "adam", "lr": 1e-2}, {"name": "adam", "lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6,
                                        "weight_decay": 1e-2}]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_matches_torch_formulas_in_float64(spec):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(5)]
    got = [x.copy() for x in params]
    opt = HostOptimizer(spec, SHAPES)
    for g in grads:
        opt.update(got, g)
    for a, b in zip(got, reference(spec, params, grads)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec", SPECS[1:4:2], ids=["sgd-momentum", "adam"])
def test_results_do_not_depend_on_the_thread_count(spec, monkeypatch):
    rng = np.random.default_rng(1)
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(3)]
    out = {}
    for n in (1, 4):
        monkeypatch.setattr(hostpool, "threads", lambda elems=0, n=n: n)
        p = [x.copy() for x in params]
        opt = HostOptimizer(spec, SHAPES)
        for g in grads:
            opt.update(p, g)
        out[n] = (p, hostpool.weights_checksum(p), hostpool.copy(p))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(out[1][0], out[4][0]))
    assert out[1][1] == out[4][1]
    assert all(np.array_equal(a, b) for a, b in zip(out[4][2], out[4][0]))


def test_checksum_sees_any_changed_element():
    rng = np.random.default_rng(2)
    p = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    before = hostpool.weights_checksum(p)
    was = p[0][799, 699]
    p[0][799, 699] = np.nextafter(was, np.float32(np.inf))          # one bit
    assert hostpool.weights_checksum(p) != before
    p[0][799, 699] = was
    assert hostpool.weights_checksum(p) == before
    p[0][799, 699], p[0][0, 0] = p[0][0, 0], p[0][799, 699]           # two values swapped
    assert hostpool.weights_checksum(p) != before


def test_the_thread_count_test_really_uses_the_pool():
    assert sum(int(np.prod(s)) for s in SHAPES) >= 2 * hostpool.PIECE


def test_host_threads_follow_the_size_of_the_work(monkeypatch):
    """Unset, ENGINE_NODE_HOST_THREADS means 4 threads, 8 for work over hostpool.BIG elements
    (a 20 M parameter model's all-reduce), never more than the CPUs; set, it is the number."""
    monkeypatch.setattr(hostpool.os, "sched_getaffinity", lambda pid: set(range(32)))
    monkeypatch.delenv("ENGINE_NODE_HOST_THREADS", raising=False)
    assert (hostpool.threads(), hostpool.threads(hostpool.BIG - 1), hostpool.threads(hostpool.BIG)) == (4, 4, 8)
    monkeypatch.setattr(hostpool.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert hostpool.threads(hostpool.BIG) == 3
    monkeypatch.setenv("ENGINE_NODE_HOST_THREADS", "6")
    monkeypatch.setattr(hostpool.os, "sched_getaffinity", lambda pid: set(range(32)))
    assert (hostpool.threads(), hostpool.threads(hostpool.BIG)) == (6, 6)


def test_a_call_uses_at_most_its_share_of_a_bigger_pool(monkeypatch):
    """A small call on a pool sized for big ones runs on at most threads(its elements)
    threads, and returns every piece's result in order."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    pool = ThreadPoolExecutor(8)
    monkeypatch.setattr(hostpool, "_pool", pool)
    monkeypatch.setattr(hostpool, "threads", lambda elems=0: 3)
    seen, lock = set(), threading.Lock()

    def fn(piece):
        with lock:
            seen.add(threading.get_ident())
        return float(piece[0][0])
    a = np.repeat(np.arange(20, dtype=np.float32), hostpool.PIECE)
    assert hostpool.run(fn, hostpool.split(a)) == [float(i) for i in range(20)]
    assert 1 <= len(seen) <= 3
    pool.shutdown()
