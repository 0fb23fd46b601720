"""Narrow gradient transport (cluster/transport.py) and the ring all-reduce that uses it.

Conversions are checked against PyTorch's (round to nearest even) on random inputs; the
all-reduce runs real RingLinks (ZeroMQ over 127.0.0.1, authenticated) in one thread per
rank, against a float64 sum of the same inputs."""

import numpy as np
import pytest
import torch
import zmq

from cluster import RingLinks, allreduce, transport as tp, wire
from cluster.allreduce import PlanMismatch
from cluster_helpers import on_every_rank

SECRET = b"transport-test-secret-0123"


def spread(n, seed=0):
    """Random float32 over many binades, both signs, with rounding ties planted."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * np.exp2(rng.integers(-60, 60, n))).astype(np.float32)
    u = x.view(np.uint32)
    u[::7] = (u[::7] & 0xFFFF0000) | 0x8000     # exact ties: even and odd kept bits
    return x


def bits_bf16_torch(x):
    return torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def test_bfloat16_rounds_to_nearest_even_like_torch():
    x = spread(300_001)                 # not a multiple of the conversion block
    np.testing.assert_array_equal(tp.narrow(x, "bf16"), bits_bf16_torch(x))


def test_float16_rounds_like_torch():
    x = spread(100_003) * np.float32(1e-30)      # mostly within half's range, some below it
    x[:1000] = np.random.default_rng(1).standard_normal(1000).astype(np.float32) * 100
    want = torch.from_numpy(x).half().numpy()
    np.testing.assert_array_equal(tp.narrow(x, "fp16").view(np.uint16), want.view(np.uint16))


@pytest.mark.parametrize("name,p", [("bfloat16", 8), ("float16", 11)])
def test_round_trip_error_is_within_half_an_ulp(name, p):
    """|x' - x| <= 2^-p |x| (p significant bits, round to nearest), against float64; below
    float16's normal range its fixed spacing 2^-24 bounds the error instead."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(200_000) * np.exp2(rng.integers(-10, 10, 200_000))).astype(np.float32)
    back = tp.round_trip(x, name)
    assert back.dtype == np.float32
    err = np.abs(back.astype(np.float64) - x.astype(np.float64))
    assert np.all(err <= np.exp2(-p) * np.abs(x.astype(np.float64)) + (2.0**-25 if name == "float16" else 0))
    assert np.mean(back != x) > 0.9                 # it does round (not a float32 copy)
    assert np.array_equal(tp.narrow(back, name), tp.narrow(x, name))   # narrow values are fixed points


@pytest.mark.parametrize("name", ["float32", "bfloat16", "float16"])
def test_nan_and_inf_survive_narrowing(name):
    specials = np.array([np.nan, np.inf, -np.inf, -np.nan, 1.5, -2.0], np.float32)
    u = specials.view(np.uint32)
    tricky = np.array([0x7F800001, 0xFFFFFFFF, 0x7FFFFFFF, 0xFF800001], np.uint32).view(np.float32)  # low-bit NaN payloads
    x = np.concatenate([specials, tricky])
    back = tp.round_trip(x, name)
    assert np.array_equal(np.isnan(back), np.isnan(x))
    inf = np.isinf(x)
    assert np.array_equal(back[inf], x[inf])
    assert np.array_equal(back[[4, 5]], x[[4, 5]])
    assert u[0] != 0   # the array was not mangled in place
    if name == "float16":
        big = tp.round_trip(np.array([70000.0, -1e6, 65504.0], np.float32), name)
        assert np.isposinf(big[0]) and np.isneginf(big[1]) and big[2] == 65504.0


def test_unknown_transport_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="bfloat16"):
        tp.canonical("int8")
    assert tp.canonical("bf16") == "bfloat16" and tp.canonical("fp16") == "float16"


def test_narrow_arrays_travel_under_their_own_dtype_names():
    x = spread(1000)
    for name in ("bfloat16", "float16"):
        w = tp.narrow(x, name)
        m = wire.decode(wire.encode("chunk", {"gen": 1, "step": 0, "phase": "rs", "b": 0, "s": 0, "k": 0}, [w],
                                    secret=None), secret=None)
        assert m.tensors[0].dtype == w.dtype and m.tensors[0].tobytes() == w.tobytes()


# --- the all-reduce through real ring links, one thread per rank ----------------------
def ring_reduce(inputs, transports, **kw):
    """Run allreduce on len(inputs) ranks; returns (outputs, errors) per rank."""
    n = len(inputs)
    ctx = zmq.Context(io_threads=2)
    links = [RingLinks(ctx, "tcp://127.0.0.1:*", SECRET, name=f"rank{r}", timeout_s=20) for r in range(n)]
    peers = [lk.endpoint for lk in links]
    for r, lk in enumerate(links):
        lk.connect(1, r, peers)
    outs, errs = on_every_rank(links, lambda r: allreduce(links[r], inputs[r].copy(), 3, transport=transports[r], **kw))
    for lk in links:
        lk.close(linger_ms=0)
    ctx.term()
    return outs, errs


RING = dict(bucket_bytes=40_000, segment_bytes=1000, small_bytes=0)   # many buckets and segments
GATHER = dict(small_bytes=1 << 30)


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
@pytest.mark.parametrize("n,length,kw", [(2, 1, RING), (2, 30_011, RING), (3, 7, RING), (3, 25_013, RING),
                                         (4, 12_345, RING), (4, 4099, GATHER), (3, 200_003, {})])
def test_narrow_allreduce_is_close_to_the_float64_sum_and_bitwise_equal_on_every_rank(name, n, length, kw):
    rng = np.random.default_rng(length)
    inputs = [(rng.standard_normal(length) * 1e-2).astype(np.float32) for _ in range(n)]
    outs, errs = ring_reduce(inputs, [name] * n, **kw)
    assert errs == [None] * n, errs
    for o in outs[1:]:
        assert o.tobytes() == outs[0].tobytes()
    want = np.sum([x.astype(np.float64) for x in inputs], axis=0)
    # each of n-1 hops rounds a partial sum, the result once more: (n) half-ulps of the
    # largest partial magnitude bound the error
    p = 8 if name == "bfloat16" else 11
    bound = n * np.exp2(-p) * np.sum([np.abs(x.astype(np.float64)) for x in inputs], axis=0)
    assert np.all(np.abs(outs[0] - want) <= bound)
    assert np.abs(outs[0] - want).max() > 0          # narrow transport does round
    if kw is not GATHER:   # the ring's result is rounded once at the end: a fixed point
        assert np.array_equal(tp.round_trip(outs[0], name), outs[0])


@pytest.mark.parametrize("kw", [RING, GATHER, {}])
def test_float32_default_is_unchanged(kw):
    """The default travels float32 bytes: the same result as before narrow transport
    existed, i.e. exactly what the ring's own float32 adds give, on every rank."""
    rng = np.random.default_rng(5)
    N = 100_003                       # 400 KB: the default settings take the ring, not the gather
    inputs = [rng.standard_normal(N).astype(np.float32) for _ in range(3)]
    outs, errs = ring_reduce(inputs, ["float32"] * 3, **kw)
    explicit, errs2 = ring_reduce(inputs, ["fp32"] * 3, **kw)
    assert errs == errs2 == [None] * 3
    for o in outs[1:] + explicit:
        assert o.tobytes() == outs[0].tobytes()
    np.testing.assert_allclose(outs[0], np.sum([x.astype(np.float64) for x in inputs], axis=0), rtol=1e-5, atol=1e-5)
    if kw is GATHER:   # rank order, float32: reproducible here exactly
        assert outs[0].tobytes() == ((inputs[0] + inputs[1]) + inputs[2]).tobytes()
    else:              # chunk c of each bucket: started by rank c, then c+1, then c+2 add theirs
        per_bucket, want = kw.get("bucket_bytes", 64 << 20) // 4, np.empty(N, np.float32)
        for b0 in range(0, N, per_bucket):
            L = min(per_bucket, N - b0)
            for c in range(3):
                sl = slice(b0 + c * L // 3, b0 + (c + 1) * L // 3)
                want[sl] = (inputs[c][sl] + inputs[(c + 1) % 3][sl]) + inputs[(c + 2) % 3][sl]
        assert outs[0].tobytes() == want.tobytes()


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")   # the signalling NaN, on purpose
@pytest.mark.parametrize("name", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("kw", [RING, GATHER])
def test_nan_and_inf_reach_the_float32_sum_on_every_rank(name, kw):
    """Whatever the transport, a NaN or Inf in one rank's gradients is in every rank's sum,
    where the node's check (on the float32 sums) refuses the step."""
    rng = np.random.default_rng(6)
    inputs = [rng.standard_normal(20_000).astype(np.float32) for _ in range(3)]
    inputs[1][123] = np.nan
    inputs[2][9_999] = np.inf
    inputs[0][19_000] = np.array([0x7F800001], np.uint32).view(np.float32)[0]   # NaN, payload in the low bits
    outs, errs = ring_reduce(inputs, [name] * 3, **kw)
    assert errs == [None] * 3, errs
    for o in outs:
        assert np.isnan(o[123]) and np.isposinf(o[9_999]) and np.isnan(o[19_000])
        assert np.isfinite(np.delete(o, [123, 9_999, 19_000])).all()
        assert o.tobytes() == outs[0].tobytes()


def test_ranks_with_different_transports_refuse_before_moving_data():
    rng = np.random.default_rng(7)
    inputs = [rng.standard_normal(10_000).astype(np.float32) for _ in range(3)]
    outs, errs = ring_reduce(inputs, ["bfloat16", "float32", "bfloat16"], **RING)
    assert any(isinstance(e, PlanMismatch) and "dtype" in str(e) for e in errs), errs


@pytest.mark.parametrize("kw", [RING, GATHER])
def test_exact_tail_sums_the_last_elements_in_float32(kw):
    """A loss and a vote packed behind the gradients keep float32 sums under bf16 transport."""
    rng = np.random.default_rng(8)
    inputs = [rng.standard_normal(30_002).astype(np.float32) for _ in range(3)]
    for x in inputs:
        x[-2] = np.float32(2.302585) + np.float32(rng.standard_normal() * 1e-3)    # a loss: bf16 would round it
    outs, errs = ring_reduce(inputs, ["bf16"] * 3, exact_tail=2, **kw)
    assert errs == [None] * 3, errs
    for o in outs[1:]:
        assert o.tobytes() == outs[0].tobytes()
    tail = np.sum([x[-2:].astype(np.float64) for x in inputs], axis=0)     # float32 sums: 1e-7, not bf16's 4e-3
    np.testing.assert_allclose(outs[0][-2:], tail, rtol=1e-6, atol=1e-6)
    head = np.sum([x[:-2].astype(np.float64) for x in inputs], axis=0)
    assert np.all(np.abs(outs[0][:-2] - head) <= 3 * 2.0**-8 * np.sum([np.abs(x[:-2]) for x in inputs], axis=0))
    assert not np.array_equal(outs[0][:-2], head.astype(np.float32))     # the gradients did travel narrow
