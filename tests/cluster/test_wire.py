import json

import numpy as np
import pytest

from cluster import wire

S = b"secret"


def test_roundtrip_tensors_and_table():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    table = {"x": np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32),
             "y": np.arange(5, dtype=np.int64)}
    frames = wire.encode("job", {"job": "j", "optimizer": {"name": "sgd"}, "step": 0, "names": ["w"],
                                 "n_state": 0, "id": 3}, [x, np.array([1, 2], np.int64)], table, secret=S)
    assert json.loads(bytes(frames[0]))["v"] == 1
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
    frames = [json.dumps(header).encode(), *tensor_frames]
    return frames + [wire._mac(secret, frames)]


def test_stranger_without_secret_is_refused():
    refused(wire.encode("hello", secret=b"other"), "unauthenticated")


def test_altered_frame_is_refused():
    frames = [bytearray(f) for f in wire.encode("ping", {"t": 1.0}, [np.zeros(4, np.float32)], secret=S)]
    frames[1][0] ^= 1
    refused(frames, "unauthenticated")


def test_validation_codes():
    refused(forge({"v": 2, "type": "hello"}), "bad_version")
    refused(forge({"v": 1, "type": "rm -rf"}), "bad_type")
    refused(forge({"v": 1, "type": "ping"}), "bad_field")                       # missing t
    refused(forge({"v": 1, "type": "ping", "t": "now"}), "bad_field")           # wrong type
    refused(forge({"v": 1, "type": "ping", "t": 1, "extra": 1}), "bad_field")   # unknown field
    refused(forge({"v": 1, "type": "hello", "tensors": [{"dtype": "float32", "shape": [4]}]}), "truncated")
    refused(forge({"v": 1, "type": "hello", "tensors": [{"dtype": "float32", "shape": [4]}]}, b"x" * 15), "bad_size")
    refused(forge({"v": 1, "type": "hello", "tensors": [{"dtype": "object", "shape": [1]}]}, b"x" * 8), "bad_dtype")
    refused(forge({"v": 1, "type": "hello", "tensors": [{"dtype": "uint8", "shape": [-1]}]}, b"x"), "bad_shape")
    refused(forge({"v": 1, "type": "hello", "table": [{"name": "x", "dtype": "float32", "shape": [1]}]},
                  b"not arrow"), "bad_table")
    refused([b"{}"], "truncated")
    with pytest.raises(wire.WireError) as e:
        wire.decode(wire.encode("hello", [], [np.zeros(100, np.float32)], secret=S), secret=S, max_bytes=200)
    assert e.value.code == "too_large"
