"""Ring data-plane authentication (cluster/auth.py): a connection is admitted once, with a
fresh token made from the cluster secret; strangers, forgers and replays deliver nothing."""
import time

import pytest
import zmq

from cluster import PeerLost, RingLinks, auth, wire

S = b"ring-test-secret-0123"


def test_gate_checks_token_receiver_time_and_nonce():
    gate = auth.Gate(S, lambda: "tcp://10.0.0.2:7071")
    now = time.time()
    user, pw = auth.credentials(S, "tcp://10.0.0.1:7071", "tcp://10.0.0.2:7071", now)
    assert gate.check(user, pw, now) is None
    assert gate.check(user, pw, now + 1) == "replayed token"
    assert "wrong secret" in gate.check(*auth.credentials(b"other", "tcp://a:1", "tcp://10.0.0.2:7071"), now)
    assert "token for" in gate.check(*auth.credentials(S, "tcp://a:1", "tcp://10.0.0.3:7071"), now)
    assert "clocks" in gate.check(*auth.credentials(S, "tcp://a:1", "tcp://10.0.0.2:7071", now - 2 * auth.MAX_SKEW_S), now)
    forged = user.replace(b"10.0.0.1", b"10.0.0.9")      # any change to the username breaks the MAC
    assert "wrong secret" in gate.check(forged, pw, now)


def stranger(ctx, endpoint, creds=None):
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.LINGER, 0)
    if creds:
        s.setsockopt(zmq.PLAIN_USERNAME, creds[0])
        s.setsockopt(zmq.PLAIN_PASSWORD, creds[1])
    s.connect(endpoint)
    try:   # a plan for gen 1 that would derail the collective if it got through
        s.send_multipart(wire.encode("plan", {"gen": 1, "step": 0, "sizes": [1], "dtype": "float32", "world": 2},
                                     secret=None), flags=zmq.NOBLOCK)
    except zmq.Again:
        pass
    return s


def wait_for(cond, what, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.mark.timeout(30)
def test_strangers_forgers_and_replays_cannot_inject():
    ctx = zmq.Context()
    a = RingLinks(ctx, "tcp://127.0.0.1:*", S, name="a", timeout_s=0.5)
    b = RingLinks(zmq.Context(), "tcp://127.0.0.1:*", S, name="b", timeout_s=5)
    peers = [a.endpoint, b.endpoint]
    a.connect(1, 0, peers)
    b.connect(1, 1, peers)                       # b's PUSH is a's left neighbour
    b.send("plan", {"step": 3, "sizes": [5], "dtype": "float32", "world": 2})
    assert a.recv("b's plan")["step"] == 3
    wait_for(lambda: a.gate.admitted == 1, "b admitted")
    replay = (b.push.getsockopt(zmq.PLAIN_USERNAME), b.push.getsockopt(zmq.PLAIN_PASSWORD))
    bad = [stranger(ctx, a.endpoint),                                         # no credentials at all
           stranger(ctx, a.endpoint, auth.credentials(b"guess", b.endpoint, a.endpoint)),
           stranger(ctx, a.endpoint, auth.credentials(S, b.endpoint, b.endpoint)),   # made for another node
           stranger(ctx, a.endpoint, replay)]                                 # a recorded handshake
    wait_for(lambda: a.gate.refused >= 3, f"3 PLAIN handshakes refused, got {a.gate.refused}")
    with pytest.raises(PeerLost, match="no plan"):
        a.recv("plan")                           # nothing the strangers sent arrived
    assert a.dropped == 0 and a.gate.admitted == 1
    b.send("plan", {"step": 4, "sizes": [5], "dtype": "float32", "world": 2})
    assert a.recv("b's next plan")["step"] == 4  # the admitted connection still works
    for s in bad:
        s.close()
    a.close(), b.close()
    ctx.term(), b.ctx.term()
