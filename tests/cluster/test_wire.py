import json

import numpy as np
import pytest

from cluster import wire

S = b"wire-test-secret-0123"


def test_roundtrip_tensors_and_table():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    table = {"x": np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32),
             "y": np.arange(5, dtype=np.int64)}
    frames = wire.encode("job", {"job": "j", "optimizer": {"name": "sgd"}, "step": 0, "names": ["w"],
                                 "n_state": 0, "id": 3}, [x, np.array([1, 2], np.int64)], table, secret=S)
    assert json.loads(bytes(frames[0]))["v"] == wire.VERSION
    m = wire.decode([bytes(f) for f in frames], secret=S)
    assert m.type == "job" and m["id"] == 3 and m["names"] == ["w"]
    assert m.tensors[0].dtype == np.float32 and (m.tensors[0] == x).all()
    assert m.tensors[1].tolist() == [1, 2]
    for k, v in table.items():
        assert m.table[k].dtype == v.dtype and m.table[k].shape == v.shape and (m.table[k] == v).all()


def refused(frames, code, secret=S):
    with pytest.raises(wire.WireError) as e:
        wire.decode([bytes(f) for f in frames], secret=secret)
    assert e.value.code == code, e.value
    return e.value


def forge(header, *tensor_frames, secret=S):
    header = {"n": "0" * 32, "ts": 1.0, **header}
    frames = [json.dumps(header).encode(), *tensor_frames]
    return frames + [wire._mac(secret, frames)]


def test_stranger_without_secret_is_refused():
    refused(wire.encode("hello", secret=b"other"), "unauthenticated")


def test_altered_frame_is_refused():
    frames = [bytearray(f) for f in wire.encode("ping", {"t": 1.0}, [np.zeros(4, np.float32)], secret=S)]
    frames[1][0] ^= 1
    refused(frames, "unauthenticated")


def test_validation_codes():
    refused(forge({"v": wire.VERSION + 1, "type": "hello"}), "bad_version")
    refused(forge({"v": wire.VERSION, "type": "rm -rf"}), "bad_type")
    refused(forge({"v": wire.VERSION, "type": "ping"}), "bad_field")                       # missing t
    refused(forge({"v": wire.VERSION, "type": "ping", "t": "now"}), "bad_field")           # wrong type
    refused(forge({"v": wire.VERSION, "type": "ping", "t": 1, "extra": 1}), "bad_field")   # unknown field
    refused(forge({"v": wire.VERSION, "type": "hello", "tensors": [{"dtype": "float32", "shape": [4]}]}), "truncated")
    refused(forge({"v": wire.VERSION, "type": "hello", "tensors": [{"dtype": "float32", "shape": [4]}]}, b"x" * 15), "bad_size")
    refused(forge({"v": wire.VERSION, "type": "hello", "tensors": [{"dtype": "object", "shape": [1]}]}, b"x" * 8), "bad_dtype")
    refused(forge({"v": wire.VERSION, "type": "hello", "tensors": [{"dtype": "uint8", "shape": [-1]}]}, b"x"), "bad_shape")
    refused(forge({"v": wire.VERSION, "type": "hello", "table": [{"name": "x", "dtype": "float32", "shape": [1]}], "tb": 9},
                  b"not arrow"), "bad_table")
    refused([b"{}"], "truncated")
    with pytest.raises(wire.WireError) as e:
        wire.decode(wire.encode("hello", [], [np.zeros(100, np.float32)], secret=S), secret=S, max_bytes=200)
    assert e.value.code == "too_large"


def test_large_tensors_travel_in_frames_no_larger_than_frame_bytes():
    big = np.arange(wire.FRAME_BYTES // 4 * 2 + 3, dtype=np.float32)       # 2 full frames and a bit
    table = {"x": np.ones((wire.FRAME_BYTES // 256 + 5, 64), np.float32), "y": np.zeros(wire.FRAME_BYTES // 256 + 5, np.int64)}
    frames = wire.encode("job", {"job": "j", "optimizer": {}, "step": 0, "names": ["w"], "n_state": 0},
                         [big], table, secret=S)
    assert max(memoryview(f).nbytes for f in frames) <= wire.FRAME_BYTES and len(frames) >= 1 + 3 + 2 + 1
    m = wire.decode([bytes(f) for f in frames], secret=S)
    np.testing.assert_array_equal(m.tensors[0], big)
    np.testing.assert_array_equal(m.table["x"], table["x"])
    frames = [bytes(f) for f in frames]
    refused(frames[:2] + [frames[2] + b"\0"] + frames[3:-1] + [wire._mac(S, frames[:2] + [frames[2] + b"\0"] + frames[3:-1])],
            "too_large")


def test_replay_guard_refuses_repeats_and_stale_messages():
    guard = wire.ReplayGuard(window_s=10)
    m = wire.decode(wire.encode("ping", {"t": 1.0}, secret=S), secret=S)
    guard.check(m)
    with pytest.raises(wire.WireError, match="replayed"):
        guard.check(m)
    with pytest.raises(wire.WireError, match="off this clock"):
        guard.check(wire.decode(wire.encode("ping", {"t": 1.0}, secret=S), secret=S), now=m["ts"] + 11)
    with pytest.raises(wire.WireError, match="off this clock"):
        guard.check(m, now=m["ts"] + 25)   # the nonce is forgotten after twice the window...
    assert m["n"] not in guard.seen        # ...because the time alone refuses it by then


def test_messages_that_carry_no_data_have_small_limits():
    refused(forge({"v": wire.VERSION, "type": "ping", "t": 1.0, "pad": "x" * (100 << 10)}), "too_large")
    refused(wire.encode("hello", {}, [np.zeros(20000, np.float32)], secret=S), "too_large")
    assert wire.decode(wire.encode("step", {"job": "j", "gen": 0, "step": 0, "batch": 40000, "weight": 1.0},
                                   [np.zeros(40000, np.int64)], secret=S), secret=S).type == "step"
