"""Same-host rings: Unix-socket links (ring.py bind_local) and the shared-memory sum
(cluster/localsum.py) that replaces the TCP ring's bytes when every rank is local."""
import os

import numpy as np
import pytest
import zmq

from cluster import RingLinks, allreduce, localsum
from cluster.ring import local_path
from cluster_helpers import on_every_rank

SECRET = b"localsum-test-secret-0123456"


def reduce_calls(inputs_per_call, local=True, **kw):
    """Each rank (a thread with real RingLinks) all-reduces each call's buffer in turn;
    returns per rank: the outputs, bytes sent, whether shared memory was used."""
    n = len(inputs_per_call[0])
    ctx = zmq.Context(io_threads=2)
    links = [RingLinks(ctx, "tcp://127.0.0.1:*", SECRET, name=f"rank{r}", timeout_s=20) for r in range(n)]
    if local:
        for lk in links:
            assert lk.bind_local() == local_path(lk.endpoint)
    peers = [lk.endpoint for lk in links]
    for r, lk in enumerate(links):
        lk.connect(1, r, peers)

    def work(r):
        outs = [allreduce(links[r], call[r].copy(), 10 + i, **kw) for i, call in enumerate(inputs_per_call)]
        return outs, links[r].bytes_sent, links[r].shm_ok, links[r].via

    res, errs = on_every_rank(links, work)
    paths = [lk.segments and [c[1] for c in lk.segments.mine if c] for lk in links]
    for lk in links:
        lk.close(linger_ms=0)
    ctx.term()
    assert errs == [None] * n, errs
    return res, paths


@pytest.mark.parametrize("n", [2, 3])
def test_a_ring_on_one_host_sums_through_shared_memory_bitwise_equal_on_every_rank(n):
    rng = np.random.default_rng(n)
    # growing, odd and repeated sizes: both segments, regrowth, uneven chunks
    calls = [[rng.standard_normal(size).astype(np.float32) for _ in range(n)] for size in (70_001, 300_000, 300_000, 1_000_003)]
    res, paths = reduce_calls(calls)
    for i, call in enumerate(calls):
        want = np.sum([c.astype(np.float64) for c in call], axis=0)
        for r in range(n):
            outs, sent, shm, via = res[r]
            assert shm and via.startswith("ipc://")
            assert outs[i].tobytes() == res[0][0][i].tobytes()                # every rank the same bits
            np.testing.assert_allclose(outs[i], want, rtol=1e-5, atol=1e-5)
    for r in range(n):     # only signals crossed the sockets: a few hundred bytes a call, no data
        assert res[r][1] < 2_000 * len(calls), res[r][1]
    for ps in paths:       # the segments are files in /dev/shm until the links close
        assert ps and all(not os.path.exists(p) for p in ps)


def test_without_shared_memory_the_same_ring_moves_the_bytes_over_its_sockets(monkeypatch):
    monkeypatch.setenv("ENGINE_NODE_SHM", "off")
    rng = np.random.default_rng(0)
    calls = [[rng.standard_normal(200_000).astype(np.float32) for _ in range(2)]]
    res, _ = reduce_calls(calls)
    assert not res[0][2] and res[0][3].startswith("ipc://")        # Unix sockets, the TCP ring's algorithm
    assert res[0][1] > 200_000 * 4 // 2
    np.testing.assert_allclose(res[0][0][0], calls[0][0] + calls[0][1], rtol=1e-6, atol=1e-6)


def test_a_ring_without_local_sockets_keeps_tcp():
    rng = np.random.default_rng(1)
    calls = [[rng.standard_normal(100_000).astype(np.float32) for _ in range(2)]]
    res, _ = reduce_calls(calls, local=False)
    assert not res[0][2] and res[0][3].startswith("tcp://")


def test_local_socket_path_belongs_to_the_advertised_endpoint_only():
    assert local_path("tcp://10.0.0.1:7071") != local_path("tcp://10.0.0.2:7071")
    assert local_path("tcp://10.0.0.1:7071", "off") is None
    assert localsum.usable() == os.access("/dev/shm", os.W_OK)


def test_a_newcomer_in_the_next_generation_sums_with_members_that_have_history():
    """Members count their calls (segment parity); a ring re-formed with a fresh process
    must start them all at the same segment and map every peer afresh."""
    ctx = zmq.Context(io_threads=2)
    links = [RingLinks(ctx, "tcp://127.0.0.1:*", SECRET, name=f"rank{r}", timeout_s=20) for r in range(3)]
    for lk in links:
        lk.bind_local()
    rng = np.random.default_rng(7)

    def ring(members, gen, calls):
        peers = [lk.endpoint for lk in members]
        for r, lk in enumerate(members):
            lk.connect(gen, r, peers)
        outs, errs = on_every_rank(
            members, lambda r: [allreduce(members[r], c[r].copy(), 100 * gen + i) for i, c in enumerate(calls)])
        assert errs == [None] * len(members), errs
        for i, c in enumerate(calls):
            assert all(o[i].tobytes() == outs[0][i].tobytes() for o in outs)
            np.testing.assert_allclose(outs[0][i], np.sum(c, axis=0, dtype=np.float64), rtol=1e-5, atol=1e-5)
        assert all(lk.shm_ok for lk in members)

    ring(links[:2], 1, [[rng.standard_normal(100_000).astype(np.float32) for _ in range(2)]])
    ring(links, 2, [[rng.standard_normal(150_000).astype(np.float32) for _ in range(3)] for _ in range(2)])
    for lk in links:
        lk.close(linger_ms=0)
    ctx.term()


def test_segments_of_a_dead_process_are_swept_and_live_ones_kept(tmp_path):
    live = localsum.Segments("tcp://127.0.0.1:1", str(tmp_path))
    assert live.own(0, 4096) is not None
    dead = tmp_path / "engine-ring-0123456789abcdef0123-0-7"     # no owner holds a lock on it
    dead.write_bytes(b"\0" * 4096)
    creating = tmp_path / "engine-ring-0123456789abcdef0123-1-8.new"   # a young temporary: left alone
    creating.write_bytes(b"")
    assert localsum.sweep(str(tmp_path)) == 1
    assert not dead.exists() and creating.exists() and os.path.exists(live.mine[0][1])
    live.close()
    assert os.listdir(tmp_path) == [creating.name]


def test_a_dead_nodes_socket_file_at_a_reused_endpoint_is_not_connected_to():
    """A node SIGKILLed leaves its Unix socket file; a later ring whose neighbour got the same
    TCP port (and binds no Unix socket of its own) must reach it over TCP, not queue its
    messages for the dead file (a full-suite run hung a 3-rank all-reduce exactly so)."""
    import socket as pysocket
    ctx = zmq.Context(io_threads=2)
    links = [RingLinks(ctx, "tcp://127.0.0.1:*", SECRET, name=f"rank{r}", timeout_s=20) for r in range(2)]
    peers = [lk.endpoint for lk in links]
    stale = local_path(peers[1])
    dead = pysocket.socket(pysocket.AF_UNIX, pysocket.SOCK_STREAM)
    try:
        if os.path.exists(stale):
            os.unlink(stale)
        dead.bind(stale)          # bound, never listening, then closed: what a killed node leaves
        dead.close()
        for r, lk in enumerate(links):
            lk.connect(1, r, peers)
        assert links[0].via == peers[1]
        inputs = [np.random.default_rng(r).standard_normal(50_000).astype(np.float32) for r in range(2)]
        outs, errs = on_every_rank(links, lambda r: allreduce(links[r], inputs[r].copy(), 5))
        assert errs == [None, None], errs
        want = inputs[0].astype(np.float64) + inputs[1]
        for r in range(2):
            np.testing.assert_allclose(outs[r], want, rtol=1e-6, atol=1e-6)
    finally:
        for lk in links:
            lk.close(linger_ms=0)
        ctx.term()
        if os.path.exists(stale):
            os.unlink(stale)
