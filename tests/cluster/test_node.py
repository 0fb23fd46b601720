"""engine-node survives hostile input, serves health and metrics, then trains."""
import json
import random
import urllib.request

import numpy as np
import zmq

from cluster import Cluster, ReferenceMLP, auth, wire
from cluster.reference import blobs
from cluster_helpers import SECRET, Session, accuracy, child_env, reference_fit, start_nodes

S = SECRET.encode()


def valid_messages(rng):
    t = np.arange(rng.randint(0, 50), dtype=np.float32)
    return [
        wire.encode("ping", {"t": 1.5, "id": 1}, secret=S),
        wire.encode("step", {"job": "x", "gen": 0, "step": 0, "batch": 3, "weight": 0.5}, [t], secret=S),
        wire.encode("job", {"job": "j", "optimizer": {"name": "sgd", "lr": 0.1}, "step": 0, "names": ["a"],
                            "n_state": 0}, [t], {"x": np.zeros((4, 2), np.float32), "y": np.zeros(4, np.int64)},
                    secret=S),
        wire.encode("program", {"job": "j", "batch": 4, "program": {"format": "reference-mlp/1", "sizes": [2, 3]}},
                    secret=S),
        wire.encode("ring", {"job": "j", "gen": 1, "rank": 0, "peers": ["tcp://127.0.0.1:1"], "step": 0}, secret=S),
    ]


def remac(frames):
    frames = [bytes(f) for f in frames[:-1]]
    return frames + [wire._mac(S, frames)]


def mutate(rng, frames):
    """One hostile message: random bytes, bit flips, truncation, bad headers (with a valid
    MAC, so validation past authentication is exercised), oversize, wrong version."""
    frames = [bytearray(bytes(f)) for f in frames]
    kind = rng.randrange(10)
    if kind == 0:
        return [rng.randbytes(rng.randint(0, 300)) for _ in range(rng.randint(1, 4))]
    if kind == 1:
        f = frames[rng.randrange(len(frames))]
        if f:
            f[rng.randrange(len(f))] ^= 1 << rng.randrange(8)
        return frames
    if kind == 2:
        return frames[:rng.randrange(1, len(frames))] if len(frames) > 1 else [b""]
    h = json.loads(bytes(frames[0]))
    if kind == 3:
        h["v"] = rng.choice([0, 2, "1", None, 1.0001])
    elif kind == 4:
        h[rng.choice(list(h))] = rng.choice([None, -1, 2**70, "x" * 100, [], {}, 1e308, True])
    elif kind == 5:
        h["type"] = rng.choice(["", "pong", "info", "__class__", "bye", "step_done", 7])
    elif kind == 6:
        h["tensors"] = [{"dtype": rng.choice(["float32", "object", "<U4", "int64"]),
                         "shape": [rng.choice([-1, 0, 3, 2**41])] * rng.randint(0, 10)}]
    elif kind == 7:
        frames[0] = bytearray(rng.choice([b"[" * 100000, b"\xff\xfe", b"{}", b"null", b'{"v":1']))
        return remac(frames + [b""])
    elif kind == 8:
        frames.insert(1, bytearray(rng.randbytes(rng.randint(0, 64))))   # an extra frame
    else:
        return remac([json.dumps(h).encode(), b"\0" * (3 << 20), b""])  # over the 2 MB limit
    frames[0] = bytearray(json.dumps(h).encode())
    return remac(frames + [b""])


def test_node_survives_1000_hostile_messages_then_trains(procs):
    nodes = start_nodes(procs, 2, extra_args=("--max-message-mb", "2"))
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    auth.control_client(sock, S, nodes[0]["control"])   # past the handshake: exercise message validation
    sock.connect(nodes[0]["control"])
    data = ctx.socket(zmq.PUSH)           # garbage for the ring socket too, from a stranger: refused
    data.setsockopt(zmq.LINGER, 0)        # at the handshake (no token), so nothing is queued there
    data.connect(nodes[0]["data"])
    rng = random.Random(1234)
    codes = {}
    n_sent = 1200
    for i in range(n_sent):
        frames = mutate(rng, rng.choice(valid_messages(rng)))
        sock.send_multipart(frames)
        assert sock.poll(5000), f"no reply to hostile message {i}: {[bytes(f)[:80] for f in frames]}"
        reply = wire.decode(sock.recv_multipart(), secret=S)   # replies are authenticated too
        codes[reply.fields.get("code", reply.type)] = codes.get(reply.fields.get("code", reply.type), 0) + 1
        if i % 4 == 0:
            try:
                data.send_multipart(mutate(rng, rng.choice(valid_messages(rng))), flags=zmq.NOBLOCK)
            except zmq.Again:             # no admitted connection to send on
                pass
    assert sum(v for k, v in codes.items() if k not in ("pong", "ok", "info")) >= 1000, codes
    for code in ("unauthenticated", "truncated", "bad_version", "bad_type", "bad_field", "too_large", "bad_header"):
        assert codes.get(code), (code, codes)
    assert "internal" not in codes, codes
    assert nodes[0]["proc"].poll() is None

    xtr, ytr, xte, yte = blobs()
    model = ReferenceMLP([64, 32, 10])
    res = Cluster([n["control"] for n in nodes], SECRET, heartbeat_s=0.2).fit(
        model, None, {"name": "sgd", "lr": 0.1, "momentum": 0.9}, (xtr, ytr), epochs=3, global_batch=64)
    assert res.history[-1]["loss"] < 0.5 * res.history[0]["loss"]
    want = reference_fit(ReferenceMLP([64, 32, 10]), {"name": "sgd", "lr": 0.1, "momentum": 0.9}, xtr, ytr, 64, res.step)
    for k in want:   # the fuzzing left no trace in the training result
        np.testing.assert_allclose(res.params[k], want[k], rtol=1e-3, atol=1e-4)
    assert accuracy(model, res.params, xte, yte) > 0.7

    metrics = urllib.request.urlopen(nodes[0]["metrics"] + "/metrics", timeout=5).read().decode()
    for name in ("engine_node_step_seconds", "engine_node_samples_per_second", "engine_node_allreduce_bytes_total",
                 "engine_node_allreduce_bandwidth_bytes_per_second", "engine_node_heartbeat_age_seconds"):
        assert name in metrics, name
    steps = [l for l in metrics.splitlines() if l.startswith("engine_node_steps_total")]
    assert float(steps[0].split()[-1]) == res.step
    bad = sum(float(l.split()[-1]) for l in metrics.splitlines() if l.startswith("engine_node_bad_messages_total"))
    assert bad >= 1000
    health = json.loads(urllib.request.urlopen(nodes[0]["metrics"] + "/healthz", timeout=5).read())
    assert health["status"] == "ok" and nodes[0]["control"] not in json.dumps(health)
    assert health["devices"] and all(isinstance(d, str) and "(" in d for d in health["devices"])   # for the UI


def test_stranger_is_refused(procs):
    """Without the secret there is no connection: the handshake fails before any message."""
    node = start_nodes(procs, 1)[0]
    for stranger in (Session(node["control"], secret=b"not the secret, but long", authenticate=True),
                     Session(node["control"], authenticate=False)):
        assert stranger.send_frames(wire.encode("hello", {"id": 1}, secret=b"not the secret, but long"),
                                    timeout=1) is None   # no reply: nothing about the node leaks
        stranger.close()
    metrics = urllib.request.urlopen(node["metrics"] + "/metrics", timeout=5).read().decode()
    assert float(next(l for l in metrics.splitlines()
                      if l.startswith("engine_node_refused_connections")).split()[-1]) >= 1
    assert Session(node["control"]).hello().type == "info"   # the secret's holder gets in


def test_hello_reports_devices_speed_and_data_endpoint(procs):
    node = start_nodes(procs, 1)[0]
    info = Session(node["control"]).hello()
    assert info.type == "info" and info["re"] == 1
    assert info["node"] == node["control"] and info["data"] == node["data"]
    assert info["speed"] > 0 and info["devices"] and all("name" in d for d in info["devices"])
    node["proc"].terminate()                  # SIGTERM: a clean exit
    assert node["proc"].wait(10) == 0


def test_unknown_device_is_a_startup_error_that_lists_the_devices(procs):
    p = procs.start(["-m", "cluster.node", "--listen", "tcp://127.0.0.1:*", "--metrics", "127.0.0.1:0",
                     "--device", "no-such-accelerator"], env=child_env(ENGINE_NODE_SECRET=SECRET))
    assert p.wait(timeout=60) == 2 and p.stdout.read() == ""
    err = p.log()
    assert "no-such-accelerator" in err and "found:" in err.lower(), err
