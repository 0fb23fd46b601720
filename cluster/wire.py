"""Wire format: one function from message to ZeroMQ frames and its inverse.

Frames: [header JSON, tensor frames..., (Arrow IPC table frames), MAC].  Frame 0 is a
JSON header {"v": 2, "type": ..., ...}; each tensor travels as raw little-endian bytes
whose dtype and shape are in the header; a table travels as one Arrow IPC stream (its
byte count in the header, "tb").  No frame is larger than FRAME_BYTES: a larger tensor or
table is cut into consecutive frames of exactly FRAME_BYTES (the last one shorter), a
count both sides derive from the header, so a socket can refuse any frame above
FRAME_BYTES (ZMQ_MAXMSGSIZE) before it is read.  The last frame is HMAC-SHA256 over every
other frame (length-prefixed so frame boundaries cannot be shifted), keyed by the
cluster's shared secret.

Authenticated (MAC'd) messages also carry a fresh random nonce "n" and the sender's unix
time "ts", both under the MAC: a receiver keeps a ReplayGuard that refuses a message
whose time is more than REPLAY_WINDOW_S off its own clock, or whose nonce it has already
seen inside that window, so a recorded message cannot be played again.  Ring data-plane messages have no
MAC frame (`secret=None`): their connection was authenticated once (auth.py).  Nothing
is ever unpickled: a peer
can only make us parse JSON, copy bytes into numpy arrays of an allowed dtype, and read
Arrow IPC, all of which are checked before use.
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import json
import math
import re
import secrets as _secrets
import struct
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

VERSION = 2
MAX_MESSAGE_BYTES = 512 << 20     # whole message
MAX_HEADER_BYTES = 4 << 20        # programs (IR JSON) are the largest headers
FRAME_BYTES = 4 << 20             # the largest frame of any message
# ZMQ_MAXMSGSIZE of every socket: a frame plus room for CURVE's envelope (each frame travels
# inside a MESSAGE command, 33 bytes more), which libzmq's limit counts
SOCKET_MAX_FRAME = FRAME_BYTES + 4096
REPLAY_WINDOW_S = 300.0           # authenticated messages: |their time - ours| at most this
MAX_TENSORS = 4096
MAX_DIMS = 8
MAC_BYTES = 32
# float16 and bfloat16: narrow gradient transport (cluster/transport.py); numpy has no
# bfloat16, so its values travel as their uint16 bit patterns
DTYPES = {"float32": "<f4", "float64": "<f8", "int64": "<i8", "int32": "<i4", "uint8": "|u1",
          "float16": "<f2", "bfloat16": "<u2"}

# Per message type: field -> (python types, required).  Unknown fields are refused so a
# typo on one side fails loudly instead of being ignored.
_NUM = (int, float)
SCHEMAS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    # driver -> node
    "hello": {},
    "ping": {"t": (_NUM, True)},
    "job": {"job": ((str,), True), "optimizer": ((dict,), True), "step": ((int,), True),
            "names": ((list,), True), "n_state": ((int,), True), "dataset": ((dict,), False),
            "host_optimizer": ((bool,), False), "transport": ((str,), False)},
    "program": {"job": ((str,), True), "batch": ((int,), True), "program": ((dict,), True)},
    "ring": {"job": ((str,), True), "gen": ((int,), True), "rank": ((int,), True),
             "peers": ((list,), True), "step": ((int,), True)},
    "step": {"job": ((str,), True), "gen": ((int,), True), "step": ((int,), True),
             "batch": ((int,), True), "weight": (_NUM, True)},
    "abort": {"job": ((str,), True)},
    "state": {"job": ((str,), True)},
    "stop": {},
    # node -> driver
    "info": {"node": ((str,), True), "devices": ((list,), True), "speed": (_NUM, True),
             "data": ((str,), True), "device": ((str,), False),
             "cpus": ((list,), False)},   # engine-node --cpus: sent only by a pinned node
    "pong": {"t": (_NUM, True), "step": ((int,), True), "busy": ((bool,), True)},
    "ok": {"step": ((int,), False)},
    "step_done": {"step": ((int,), True), "loss": (_NUM, True), "compute_s": (_NUM, True),
                  "allreduce_s": (_NUM, True), "bytes": ((int,), True), "digest": ((str,), False)},
    "step_failed": {"step": ((int,), True), "message": ((str,), True), "code": ((str,), False),
                    "peer": ((str,), False)},
    "state_data": {"step": ((int,), True), "names": ((list,), True), "n_state": ((int,), True)},
    "error": {"code": ((str,), True), "message": ((str,), True)},
    "bye": {"node": ((str,), True), "reason": ((str,), True)},
    # node -> node (ring)
    "plan": {"gen": ((int,), True), "step": ((int,), True), "sizes": ((list,), True),
             "dtype": ((str,), True), "world": ((int,), True), "algo": ((str,), False)},
    "chunk": {"gen": ((int,), True), "step": ((int,), True), "phase": ((str,), True),
              "b": ((int,), True), "s": ((int,), True), "k": ((int,), True)},
}
# id: request number; re: the id a reply answers; rn: the nonce of the request it answers
# (binds a reply to one request); n, ts: nonce and time of every MAC'd message; session:
# the node's session token from hello, on every later request; tb: table bytes.
_COMMON = {"v", "type", "id", "re", "rn", "n", "ts", "session", "tensors", "table", "tb"}
# Whole-message limits of the types that never carry data (the rest: max_bytes), checked
# right after the MAC and the header's JSON, before its fields, tensors or table are read.
TYPE_MAX_BYTES = {t: 64 << 10 for t in ("hello", "ping", "abort", "state", "stop", "pong", "ok", "bye", "plan")}
TYPE_MAX_BYTES |= {"ring": 1 << 20, "info": 1 << 20, "error": 1 << 20, "step_failed": 1 << 20}
_NONCE = re.compile(r"[0-9a-f]{32}")


class WireError(ValueError):
    """A message that must be refused; `code` goes into the error reply."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass
class Message:
    type: str
    fields: dict = field(default_factory=dict)
    tensors: list = field(default_factory=list)
    table: dict | None = None      # column name -> numpy array
    raw: list | None = None        # the frames it came in, when a transport keeps them

    def __getitem__(self, key):
        return self.fields[key]


def _mac(secret: bytes, frames) -> bytes:
    h = hmac.new(secret, digestmod=hashlib.sha256)
    for f in frames:
        mv = memoryview(f)
        h.update(struct.pack("<Q", mv.nbytes))
        h.update(mv)
    return h.digest()


def _dtype_name(a: np.ndarray) -> str:
    for name, code in DTYPES.items():
        if a.dtype == np.dtype(code):
            return name
    raise WireError("bad_dtype", f"dtype {a.dtype} cannot travel; allowed: {sorted(DTYPES)}")


def _table_frame(table: dict) -> tuple[bytes, list]:
    cols, meta = [], []
    for name, a in table.items():
        a = np.ascontiguousarray(a)
        dt = _dtype_name(a)
        flat = pa.array(a.reshape(len(a), -1).reshape(-1)) if a.ndim > 1 else pa.array(a)
        if a.ndim > 1:  # one row per sample; the trailing shape goes in the header
            flat = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(a.shape[1:])))
        cols.append(flat)
        meta.append({"name": name, "dtype": dt, "shape": list(a.shape)})
    sink = pa.BufferOutputStream()
    t = pa.table(cols, names=[m["name"] for m in meta])
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    return sink.getvalue().to_pybytes(), meta


def _split(buf) -> list:
    """One payload as frames of at most FRAME_BYTES (views, no copy)."""
    mv = memoryview(buf).cast("B")
    return [mv[i:i + FRAME_BYTES] for i in range(0, mv.nbytes, FRAME_BYTES)] or [mv]


def n_frames(nbytes: int) -> int:
    return max(1, -(-int(nbytes) // FRAME_BYTES))


def encode(type: str, fields: dict | None = None, tensors=(), table: dict | None = None,
           *, secret: bytes | None) -> list:
    """Message -> frames.  Tensors are sent from their own memory (no copy) when
    contiguous little-endian: the caller must not mutate them until sent.  secret=None
    adds no MAC, nonce or time: only for connections authenticated by auth.py."""
    header = {"v": VERSION, "type": type, **(fields or {})}
    if secret is not None:     # fresh for every message, under the MAC
        header.setdefault("n", _secrets.token_hex(16))   # a caller may pick it, to match the reply
        header["ts"] = round(time.time(), 3)
    frames = []
    metas = []
    for t in tensors:
        a = np.ascontiguousarray(t)
        metas.append({"dtype": _dtype_name(a), "shape": list(a.shape)})
        a = a.astype(DTYPES[metas[-1]["dtype"]], copy=False)
        frames.extend(_split(a))
    if metas:
        header["tensors"] = metas
    if table is not None:
        blob, header["table"] = _table_frame(table)
        header["tb"] = len(blob)
        frames.extend(_split(blob))
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    _validate_header(header)   # never send what the peer would refuse
    frames.insert(0, head)
    if secret is not None:
        frames.append(_mac(secret, frames))
    return frames


def _check_shape(meta, where: str) -> tuple[np.dtype, tuple[int, ...]]:
    if not isinstance(meta, dict) or set(meta) - {"dtype", "shape", "name"}:
        raise WireError("bad_header", f"{where}: expected {{dtype, shape}}")
    dt, shape = meta.get("dtype"), meta.get("shape")
    if dt not in DTYPES:
        raise WireError("bad_dtype", f"{where}: dtype {dt!r} not in {sorted(DTYPES)}")
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(type(d) is int and 0 <= d < 1 << 40 for d in shape)):
        raise WireError("bad_shape", f"{where}: shape {shape!r}")
    return np.dtype(DTYPES[dt]), tuple(shape)


def _validate_header(h) -> None:
    if not isinstance(h, dict):
        raise WireError("bad_header", "header is not a JSON object")
    if h.get("v") != VERSION:
        raise WireError("bad_version", f"protocol version {h.get('v')!r}, this node speaks {VERSION}")
    schema = SCHEMAS.get(h.get("type")) if isinstance(h.get("type"), str) else None
    if schema is None:
        raise WireError("bad_type", f"unknown message type {h.get('type')!r}")
    for k, v in h.items():
        if k in _COMMON:
            continue
        if k not in schema:
            raise WireError("bad_field", f"{h['type']}: unknown field {k!r}")
        types = schema[k][0]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise WireError("bad_field", f"{h['type']}.{k}: expected {[t.__name__ for t in types]}")
    for k, (_, required) in schema.items():
        if required and k not in h:
            raise WireError("bad_field", f"{h['type']}: missing field {k!r}")
    for k in ("id", "re", "tb"):
        if k in h and (type(h[k]) is not int or h[k] < 0):
            raise WireError("bad_field", f"{k} must be a non-negative integer")
    for k in ("n", "rn"):
        if k in h and not (isinstance(h[k], str) and _NONCE.fullmatch(h[k])):
            raise WireError("bad_field", f"{k} must be 32 lowercase hex digits")
    if "session" in h and not (isinstance(h["session"], str) and _NONCE.fullmatch(h["session"])):
        raise WireError("bad_field", "session must be 32 lowercase hex digits")
    if "ts" in h and not (type(h["ts"]) in (int, float) and math.isfinite(h["ts"])):
        raise WireError("bad_field", "ts must be a finite number")
    if "tensors" in h and (not isinstance(h["tensors"], list) or len(h["tensors"]) > MAX_TENSORS):
        raise WireError("bad_header", "tensors must be a list of at most %d entries" % MAX_TENSORS)
    if "table" in h and (not isinstance(h["table"], list) or not h["table"] or "tb" not in h):
        raise WireError("bad_header", "table must be a non-empty list of columns, with its byte count tb")


def decode(frames, *, secret: bytes | None, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Frames -> Message, or WireError naming what is wrong.  The MAC is checked before
    the header is parsed, so a stranger's bytes never reach the JSON parser.
    secret=None expects no MAC: only for connections authenticated by auth.py."""
    if len(frames) < (1 if secret is None else 2):
        raise WireError("truncated", f"{len(frames)} frame(s); need at least a header"
                        + (" and a MAC" if secret is not None else ""))
    sizes = [memoryview(f).nbytes for f in frames]
    if sum(sizes) > max_bytes:
        raise WireError("too_large", f"{sum(sizes)} bytes > limit {max_bytes}")
    if sizes[0] > MAX_HEADER_BYTES:
        raise WireError("too_large", f"header of {sizes[0]} bytes > {MAX_HEADER_BYTES}")
    if max(sizes) > FRAME_BYTES:
        raise WireError("too_large", f"a frame of {max(sizes)} bytes > {FRAME_BYTES}")
    if secret is None:
        body = frames
    else:
        body, mac = frames[:-1], bytes(frames[-1])
        if len(mac) != MAC_BYTES or not hmac.compare_digest(mac, _mac(secret, body)):
            raise WireError("unauthenticated", "bad MAC: wrong secret or altered message")
    try:
        h = json.loads(bytes(body[0]))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:   # RecursionError: [[[[...]]]]
        raise WireError("bad_header", f"header is not JSON: {type(e).__name__}") from None
    limit = TYPE_MAX_BYTES.get(h.get("type")) if isinstance(h, dict) and isinstance(h.get("type"), str) else None
    if limit is not None and sum(sizes) > limit:
        raise WireError("too_large", f"a {h['type']} message of {sum(sizes)} bytes > {limit} for its type")
    _validate_header(h)
    if secret is not None and not ("n" in h and "ts" in h):
        raise WireError("bad_field", "an authenticated message needs a nonce n and a time ts")
    metas = h.get("tensors", [])
    shapes = [_check_shape(meta, f"tensor {i}") for i, meta in enumerate(metas)]
    nbytes = [math.prod(shape) * dt.itemsize for dt, shape in shapes]
    if sum(nbytes) + h.get("tb", 0) > max_bytes:
        raise WireError("too_large", f"header announces {sum(nbytes) + h.get('tb', 0)} bytes > limit {max_bytes}")
    counts = [n_frames(n) for n in nbytes] + ([n_frames(h["tb"])] if "table" in h else [])
    if len(body) != 1 + sum(counts):
        raise WireError("truncated", f"header announces {len(metas)} tensor(s) and "
                        f"{1 if 'table' in h else 0} table(s) in {sum(counts)} frame(s), got {len(body) - 1}")
    tensors, at = [], 1
    for i, ((dt, shape), n, k) in enumerate(zip(shapes, nbytes, counts)):
        got = sum(sizes[at:at + k])
        if got != n or any(sz != FRAME_BYTES for sz in sizes[at:at + k - 1]):
            raise WireError("bad_size", f"tensor {i}: {shape} {dt} needs {n} bytes, frames have {got}")
        buf = body[at] if k == 1 else b"".join(bytes(f) for f in body[at:at + k])
        tensors.append(np.frombuffer(buf, dtype=dt).reshape(shape))
        at += k
    table = None
    if "table" in h:
        got = sum(sizes[at:len(body)])
        if got != h["tb"] or any(sz != FRAME_BYTES for sz in sizes[at:len(body) - 1]):
            raise WireError("bad_size", f"table: header says {h['tb']} bytes, frames have {got}")
        table = _read_table(body[at] if counts[-1] == 1 else b"".join(bytes(f) for f in body[at:]), h["table"])
    fields = {k: v for k, v in h.items() if k not in ("v", "type", "tensors", "table", "tb")}
    return Message(h["type"], fields, tensors, table)


class ReplayGuard:
    """Refuses an authenticated message seen before, or from outside the time window.

    Nonces are remembered for twice the window after they arrive (a message is refused
    on its time alone after that), in arrival order, so forgetting is O(1) a message.
    Only MAC-checked messages reach it, so only holders of the secret can fill it;
    `max_entries` bounds even that."""

    def __init__(self, window_s: float = REPLAY_WINDOW_S, max_entries: int = 1 << 20):
        self.window_s, self.max_entries = window_s, max_entries
        self.seen: set[str] = set()
        self.order: collections.deque = collections.deque()   # (forget after, nonce)
        self.replayed = self.stale = 0

    def check(self, msg: "Message", now: float | None = None) -> None:
        now = time.time() if now is None else now
        while self.order and self.order[0][0] < now:
            self.seen.discard(self.order.popleft()[1])
        n, ts = msg.fields.get("n"), msg.fields.get("ts")
        if n is None or ts is None:
            raise WireError("bad_field", "an authenticated message needs a nonce n and a time ts")
        if abs(now - ts) > self.window_s:
            self.stale += 1
            raise WireError("stale", f"message time {ts - now:+.0f}s off this clock (limit {self.window_s:.0f}s): "
                            "a replay, or clocks out of sync")
        if n in self.seen:
            self.replayed += 1
            raise WireError("replayed", "this message was received before (same nonce): refused as a replay")
        if len(self.seen) >= self.max_entries:
            raise WireError("busy", f"more than {self.max_entries} messages inside the replay window")
        self.seen.add(n)
        self.order.append((now + 2 * self.window_s, n))


def save_table(path: str, table: dict) -> None:
    """Write a table as one Arrow IPC stream, column shapes in the schema metadata
    (a node's ENGINE_NODE_DATA directory holds these)."""
    blob, metas = _table_frame(table)
    t = pa.ipc.open_stream(pa.py_buffer(blob)).read_all()
    t = t.replace_schema_metadata({b"many-as-one": json.dumps(metas).encode()})
    with pa.OSFile(path, "wb") as f, pa.ipc.new_stream(f, t.schema) as w:
        w.write_table(t)


def load_table(path: str) -> dict:
    with open(path, "rb") as f:
        blob = f.read()
    try:
        meta = pa.ipc.open_stream(pa.py_buffer(blob)).schema.metadata or {}
        metas = json.loads(meta[b"many-as-one"])
    except (pa.ArrowException, KeyError, ValueError) as e:
        raise WireError("bad_table", f"{path}: not a table written by save_table ({type(e).__name__})") from None
    return _read_table(blob, metas)


def table_digest(table: dict) -> str:
    """Content hash, so every node can prove it trains on the same rows."""
    h = hashlib.sha256()
    for name in sorted(table):
        a = np.ascontiguousarray(table[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _read_table(frame, metas) -> dict:
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(frame))
        t = reader.read_all()
        t.validate(full=True)
    except (pa.ArrowException, ValueError, OSError) as e:
        raise WireError("bad_table", f"Arrow IPC: {e}") from None
    if t.num_columns != len(metas):
        raise WireError("bad_table", f"{t.num_columns} columns, header lists {len(metas)}")
    out = {}
    for i, meta in enumerate(metas):
        dt, shape = _check_shape(meta, f"column {i}")
        name = meta.get("name")
        if not isinstance(name, str) or t.column_names[i] != name:
            raise WireError("bad_table", f"column {i} name {name!r} does not match the stream")
        col = t.column(i).combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            col = col.flatten()
        try:
            a = col.to_numpy(zero_copy_only=False)
        except (pa.ArrowException, ValueError) as e:
            raise WireError("bad_table", f"column {name!r}: {e}") from None
        if a.dtype != dt or a.size != int(np.prod(shape, dtype=np.int64)):
            raise WireError("bad_table", f"column {name!r}: got {a.dtype}[{a.size}], header says {dt}{shape}")
        out[name] = a.reshape(shape)
    return out
