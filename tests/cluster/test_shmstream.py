"""The streamed same-host all-reduce (cluster/shmstream.py): pieces summed through shared
memory as each rank hands them over, bitwise equal on every rank, no bytes and no message
per step on the ring's sockets, and a rank that stops or leaves ends the wait."""
import threading
import time

import numpy as np
import pytest
import zmq

from cluster import RingLinks, shmstream
from cluster.ring import PeerLost
from cluster_helpers import on_every_rank

SECRET = b"shmstream-test-secret-012345"


def make_ring(n, timeout_s=20.0):
    ctx = zmq.Context(io_threads=2)
    links = [RingLinks(ctx, "tcp://127.0.0.1:*", SECRET, name=f"rank{r}", timeout_s=timeout_s) for r in range(n)]
    for lk in links:
        lk.bind_local()
    peers = [lk.endpoint for lk in links]
    for r, lk in enumerate(links):
        lk.connect(1, r, peers)
    return ctx, links


def close_ring(ctx, links):
    for lk in links:
        lk.close(linger_ms=0)
    ctx.term()


def test_pieces_cover_the_buffer_once_last_parameter_first():
    sizes = [784 * 64, 64, 64 * 64, 0, 64, 10 * 64, 10]
    offs = np.concatenate([[0], np.cumsum(sizes)])
    for cap in (1, 7, 100, 5000, 1 << 30):
        pieces = shmstream.plan(sizes, cap)
        covered = sorted(i for lo, hi in pieces for i in range(lo, hi))
        assert covered == list(range(sum(sizes))), cap
        assert all(hi - lo <= cap for lo, hi in pieces)
        # the last parameter's values come first: backward finishes it first
        param = [int(np.searchsorted(offs, lo, side="right")) - 1 for lo, _ in pieces]
        assert param == sorted(param, reverse=True), cap
    assert shmstream.plan(sizes, 1 << 30) == [(0, sum(sizes))]
    cut = lambda a, b: [(lo, min(lo + 650, b)) for lo in range(a, b, 650)]   # noqa: E731
    # 640 + 10 merged; 64 alone (714 > 650); 4096 cut; 64; 50176 cut
    assert shmstream.plan(sizes, 650) == [(offs[5], offs[7]), (offs[4], offs[5]), *cut(offs[2], offs[3]),
                                          (offs[1], offs[2]), *cut(0, offs[1])]


@pytest.mark.parametrize("n", [2, 3])
def test_every_rank_ends_with_the_same_bits_of_the_sum_over_several_steps(n):
    """Several calls (both segments, reused), ranks out of step with each other: the
    float64 sum within float32 rounding, the same bytes everywhere, each rank's published
    weight readable by all, and nothing but the setup on the sockets."""
    rng = np.random.default_rng(n)
    sizes = [3000, 40, 70_001, 10]
    length = sum(sizes) + 2
    steps = [[rng.standard_normal(length).astype(np.float32) for _ in range(n)] for _ in range(4)]
    ctx, links = make_ring(n)

    def work(r):
        s = shmstream.stream_for(links[r], 0, 4 * 20_000, length, sizes)
        assert s is not None and len(s.pieces) > 3 and not s.on_device
        sent0, outs, weights = links[r].bytes_sent, [], []
        for k, data in enumerate(steps):
            time.sleep(0.003 * ((k + r) % 3))
            flat = data[r].copy()
            s.allreduce(flat, k)
            outs.append(flat)
            t, views = s.begin(weight=0.25 * (r + 1) + k)      # the device path's first steps
            s.publish(views, 0, t)
            s.wait(views, 0, t, k)
            weights.append(s.weights(views))
        return outs, links[r].bytes_sent - sent0, weights

    res, errs = on_every_rank(links, work)
    close_ring(ctx, links)
    assert errs == [None] * n, errs
    for k, data in enumerate(steps):
        want = sum(d.astype(np.float64) for d in data)
        for r in range(n):
            got = res[r][0][k]
            assert got.tobytes() == res[0][0][k].tobytes()
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
            assert res[r][2][k] == [0.25 * (j + 1) + k for j in range(n)]
    for r in range(n):
        assert res[r][1] == 0                                  # no byte on the sockets per step


def test_a_rank_that_never_hands_over_its_piece_ends_the_others_wait():
    """Rank 1 stalls before its second piece (a stopped process): rank 0 raises PeerLost
    naming it after the ring's timeout, not hangs; a goodbye ends the wait at once."""
    ctx, links = make_ring(2, timeout_s=1.0)
    sizes, length = [50_000, 50_000], 100_002
    streams = [None, None]

    def setup(r):
        streams[r] = shmstream.stream_for(links[r], 0, 4 * 50_000, length, sizes)

    res, errs = on_every_rank(links, setup)
    assert errs == [None, None]
    release = threading.Event()
    got = {}

    def rank0():
        t = time.monotonic()
        try:
            streams[0].allreduce(np.ones(length, np.float32), 1)
        except PeerLost as e:
            got["e"], got["s"] = e, time.monotonic() - t

    def rank1():          # publishes its first piece, then stops
        t, views = streams[1].begin()
        streams[1].publish(views, 0, t)
        release.wait(10)

    t0, t1 = threading.Thread(target=rank0), threading.Thread(target=rank1)
    t0.start(), t1.start()
    t0.join(10)
    release.set()
    t1.join(10)
    assert "did not write piece 1 of step 1" in str(got["e"]) and 0.9 < got["s"] < 5, got
    # a goodbye from the left neighbour ends the next wait within a poll slice
    links[1].say_bye("leaving")
    t = time.monotonic()
    with pytest.raises(PeerLost, match="left the ring"):
        streams[0].allreduce(np.ones(length, np.float32), 2)
    assert time.monotonic() - t < 0.5
    close_ring(ctx, links)


def test_no_stream_unless_every_rank_asks_for_one():
    ctx, links = make_ring(2)
    res, errs = on_every_rank(links, lambda r: shmstream.stream_for(links[r], 0, (1 << 20) * r, 1002, [1000]))
    assert errs == [None, None] and res == [None, None]
    close_ring(ctx, links)


def test_pieces_follow_the_order_backward_finishes_the_parameters():
    sizes = [500, 20, 300, 10]
    offs = np.concatenate([[0], np.cumsum(sizes)])
    # first parameter first (the engine's schedule computes weight gradients in forward order)
    assert shmstream.plan(sizes, 520, [0, 1, 2, 3]) == [(0, offs[2]), (offs[2], offs[4])]
    # a piece grows only over its neighbours in the buffer: 2 does not join 0, 1 joins 2 from below
    assert shmstream.plan(sizes, 10_000, [0, 2, 1, 3]) == [(0, offs[1]), (offs[1], offs[4])]


def test_every_rank_cuts_rank_0s_pieces_whatever_order_it_prefers():
    ctx, links = make_ring(3)
    sizes = [1000, 10, 1000, 10]
    res, errs = on_every_rank(links, lambda r: shmstream.stream_for(
        links[r], 0, 4 * 2000, 2022, sizes, [[0, 1, 2, 3], [3, 2, 1, 0], [1, 0, 3, 2]][r], on_device=r != 1))
    close_ring(ctx, links)
    assert errs == [None] * 3
    assert [s.pieces for s in res] == [[(0, 1010), (1010, 2020), (2020, 2022)]] * 3
    assert [s.on_device for s in res] == [False] * 3     # rank 1 sums on the host: everybody does


def test_segments_that_cannot_be_pinned_are_streamed_unpinned(monkeypatch, caplog):
    """A driver that refuses to pin the segments (a locked-memory limit) leaves the copies
    pageable, slower but the same: the node logs it and streams on."""
    pytest.importorskip("engine")
    import pyopencl as cl
    from cluster import devicetrain
    import engine
    tr = devicetrain.DeviceTrainer(engine.default_device(), {"name": "sgd", "lr": 0.1},
                                   [np.ones((3, 4), np.float32), np.ones(4, np.float32)], [], 0)

    class Links:
        rank, world = 0, 2

    class FakeStream:
        links = Links()
        views = [[(None, np.zeros(1024, np.float32)), (None, np.zeros(1024, np.float32))]] * 2
        pieces = [(0, 12), (12, 16), (16, 18)]

    real = cl.Buffer

    def refuse(ctx, flags, *a, **kw):
        if flags & cl.mem_flags.USE_HOST_PTR:
            raise cl.MemoryError("clCreateBuffer", cl.status_code.OUT_OF_HOST_MEMORY, "locked memory limit")
        return real(ctx, flags, *a, **kw)
    monkeypatch.setattr(devicetrain.cl, "Buffer", refuse)
    with caplog.at_level("WARNING"):
        st = tr._stream_state(FakeStream())
    assert "not pinned" in caplog.text and st.pins == []
    assert sorted(st.peer) == [1] and st.peer[1].nbytes == 4 * 16     # rank 1's packed gradients
