"""Ring data-plane authentication: once per connection instead of once per message.

The data plane (each rank's PUSH to its right neighbour's PULL) carries gigabytes per
step, and an HMAC over every message cost most of its bandwidth (bench/NOTES.md, "##
All-reduce").  So the PULL is a ZeroMQ PLAIN server whose ZAP handler (a thread of this
module, one per zmq.Context) admits a connection only if it shows a fresh token that
only a holder of the cluster secret can make:

    username = "v1 <sender endpoint> <receiver endpoint> <unix time> <nonce>"
    password = hex HMAC-SHA256(K, username),   K = HMAC-SHA256(secret, "many-as-one ring auth v1")

The handler checks the MAC, that the token names this receiver (a token made for one
node opens no other), that its time is within MAX_SKEW_S of ours (hosts need roughly
synchronised clocks, as NTP gives), and that its nonce was not admitted before in that
window (a recorded handshake cannot be replayed).  The secret itself never travels.
Messages over an admitted connection carry no MAC (`wire.encode(..., secret=None)`).

What this keeps out: a host without the secret can neither connect to a ring socket nor
put a message into it (a refused handshake delivers nothing).  What it does not: like
gloo's plain TCP, an attacker on the path who can rewrite TCP segments of an admitted
connection can alter data; the control plane (jobs, membership) keeps a MAC per message.
A ZeroMQ reconnect after a dropped TCP connection reuses the token and is refused as a
replay; the ring then times out and the driver re-forms it with fresh connections.

The control socket (driver -> node) is authenticated per connection too, before ZeroMQ
accepts a single message frame from the peer: with ZeroMQ CURVE where libzmq has it
(`zmq.has("curve")`, true for pyzmq's wheels), else with the same PLAIN token as the
ring.  CURVE's keys are derived from the secret (`control_keys`): the node's server key
pair and one client key pair every holder of the secret can compute.  A peer that does
not hold the secret cannot complete the handshake (the node drops it before reading any
message), and everything on an admitted control connection is encrypted and
authenticated by CURVE; the per-message MAC, nonce and time (wire.py) stay on top.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time

import zmq
import zmq.utils.z85

log = logging.getLogger("cluster.auth")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"     # fixed by ZeroMQ (RFC 27)
MAX_SKEW_S = 300.0
MIN_SECRET_BYTES = 16
_LABEL = b"many-as-one ring auth v1"


class SecretError(ValueError):
    pass


def check_secret(secret) -> bytes:
    """The cluster secret as bytes; refuses one too short to resist guessing."""
    b = secret.encode() if isinstance(secret, str) else bytes(secret or b"")
    if len(b) < MIN_SECRET_BYTES:
        raise SecretError(f"the cluster secret has {len(b)} byte(s); use at least {MIN_SECRET_BYTES} "
                          "random ones, e.g. ENGINE_NODE_SECRET=$(openssl rand -hex 16)")
    return b


def _key(secret: bytes) -> bytes:
    return hmac.new(secret, _LABEL, hashlib.sha256).digest()


def curve_available() -> bool:
    return bool(zmq.has("curve"))


def control_keys(secret: bytes) -> dict:
    """CURVE keys of the control plane, derived from the secret (Z85 text, as libzmq
    wants them): the node's server pair and the one client pair of every driver."""
    def pair(label: bytes):
        sk = zmq.utils.z85.encode(hmac.new(secret, b"many-as-one control " + label, hashlib.sha256).digest())
        return zmq.curve_public(sk), sk
    (spub, ssec), (cpub, csec) = pair(b"server v1"), pair(b"client v1")
    return {"server_public": spub, "server_secret": ssec, "client_public": cpub, "client_secret": csec}


def control_server(sock: zmq.Socket, ctx: zmq.Context, secret: bytes, domain: str, endpoint) -> "Gate":
    """Make `sock` (not yet bound) admit only holders of the secret, before any message.
    Returns the gate (its admitted/refused counts)."""
    if curve_available():
        keys = control_keys(secret)
        gate = CurveGate(keys["client_public"])
        ZapHandler.register(ctx, domain, gate)
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys["server_secret"])
    else:   # the fallback: a PLAIN token like the ring's, made out to "control" (a reconnect needs a fresh socket)
        gate = Gate(secret, lambda: "control")
        ZapHandler.register(ctx, domain, gate)
        sock.setsockopt(zmq.PLAIN_SERVER, 1)
    sock.setsockopt_string(zmq.ZAP_DOMAIN, domain)
    return gate


def control_client(sock: zmq.Socket, secret: bytes, receiver: str) -> None:
    """Make `sock` (not yet connected) able to pass `receiver`'s control_server."""
    if curve_available():
        keys = control_keys(secret)
        sock.setsockopt(zmq.CURVE_SERVERKEY, keys["server_public"])
        sock.setsockopt(zmq.CURVE_PUBLICKEY, keys["client_public"])
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys["client_secret"])
    else:   # the node may be reached through a port-forward: the token names the plane, not an address
        client(sock, secret, "driver", "control")


def credentials(secret: bytes, sender: str, receiver: str, now: float | None = None) -> tuple[bytes, bytes]:
    """(username, password) for a PUSH of `sender` connecting to `receiver`'s PULL."""
    user = f"v1 {sender} {receiver} {int(time.time() if now is None else now)} {secrets.token_hex(16)}".encode()
    return user, hmac.new(_key(secret), user, hashlib.sha256).hexdigest().encode()


def client(sock: zmq.Socket, secret: bytes, sender: str, receiver: str) -> None:
    """Make `sock` (not yet connected) present a fresh token to `receiver`."""
    user, password = credentials(secret, sender, receiver)
    sock.setsockopt(zmq.PLAIN_USERNAME, user)
    sock.setsockopt(zmq.PLAIN_PASSWORD, password)


class Gate:
    """What the ZAP handler checks for one PULL socket.  `endpoint` is called at each
    handshake, so a node may change its advertised endpoint after binding."""
    mechanism = b"PLAIN"

    def __init__(self, secret: bytes, endpoint):
        self.key, self.endpoint = _key(secret), endpoint
        self.seen: dict[bytes, float] = {}      # nonce -> when it may be forgotten
        self.admitted = self.refused = 0

    def check(self, user: bytes, password: bytes, now: float) -> str | None:
        """None to admit, else why not."""
        want = hmac.new(self.key, user, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(want, password):
            return "bad token: wrong secret or altered"
        try:
            v, sender, receiver, t, nonce = user.decode().split(" ")
            t = float(t)
        except ValueError:
            return "malformed username"
        if v != "v1" or receiver != self.endpoint():
            return f"token for {receiver!r}, this socket is {self.endpoint()!r}"
        if abs(now - t) > MAX_SKEW_S:
            return f"token time {now - t:+.0f}s off (limit {MAX_SKEW_S:.0f}s): clocks out of sync or a replay"
        for n in [n for n, until in self.seen.items() if until < now]:
            del self.seen[n]
        if nonce.encode() in self.seen:
            return "replayed token"
        self.seen[nonce.encode()] = t + 2 * MAX_SKEW_S
        return None

    def admit(self, creds: list, now: float) -> tuple[str | None, bytes]:
        """(None or why not, User-Id) for the ZAP handler."""
        if len(creds) != 2:
            return "PLAIN needs a username and a password", b""
        return self.check(creds[0], creds[1], now), creds[0].split(b" ")[1] if creds[0].count(b" ") == 4 else b""


class CurveGate:
    """Admits a CURVE client whose long-term public key is the one derived from the secret."""
    mechanism = b"CURVE"

    def __init__(self, client_public_z85: bytes):
        self.key = zmq.utils.z85.decode(client_public_z85)
        self.admitted = self.refused = 0

    def admit(self, creds: list, now: float) -> tuple[str | None, bytes]:
        if len(creds) != 1 or not hmac.compare_digest(creds[0], self.key):
            return "unknown CURVE client key: not made from the cluster secret", b""
        return None, b"driver"


class ZapHandler(threading.Thread):
    """Answers ZeroMQ's authentication requests for every Gate of one context."""
    _by_ctx: dict[int, "ZapHandler"] = {}
    _lock = threading.Lock()

    def __init__(self, ctx: zmq.Context):
        super().__init__(name="zap-handler", daemon=True)
        self.ctx, self.gates, self.stopping = ctx, {}, False
        self.sock = ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(ZAP_ENDPOINT)

    @classmethod
    def register(cls, ctx: zmq.Context, domain: str, gate: Gate) -> None:
        with cls._lock:
            h = cls._by_ctx.get(id(ctx))
            if h is None:
                h = cls._by_ctx[id(ctx)] = ZapHandler(ctx)
                h.start()
            h.gates[domain] = gate

    @classmethod
    def unregister(cls, ctx: zmq.Context, domain: str) -> None:
        with cls._lock:
            h = cls._by_ctx.get(id(ctx))
            if h is None:
                return
            h.gates.pop(domain, None)
            if not h.gates:                 # the context can only terminate once our socket is closed
                del cls._by_ctx[id(ctx)]
                h.stopping = True
        if h.stopping:
            h.join(timeout=2)

    def run(self) -> None:
        try:
            while not self.stopping:
                if self.sock.poll(100):
                    self.sock.send_multipart(self._answer(self.sock.recv_multipart()))
        finally:
            self.sock.close(linger=0)

    def _answer(self, req: list[bytes]) -> list[bytes]:
        rid = req[1] if len(req) > 1 else b""
        reply = lambda code, text, user=b"": [b"1.0", rid, code, text.encode(), user, b""]
        try:
            version, _, domain, address, _, mechanism, *creds = req
            gate = self.gates.get(domain.decode(errors="replace"))
            if version != b"1.0" or gate is None or mechanism != gate.mechanism:
                why = f"no socket for domain {domain!r} with mechanism {mechanism!r}"
            else:
                why, user = gate.admit(creds, time.time())
            if why is None:
                gate.admitted += 1
                return reply(b"200", "OK", user)   # User-Id: the sender's endpoint (ring) or "driver"
            if gate is not None:
                gate.refused += 1
            n = sum(g.refused for g in self.gates.values())
            if n <= 20 or n % 1000 == 0:     # a flood must not flood the log
                log.warning("refused a ring connection from %s (%d so far): %s", address.decode(errors="replace"), n, why)
            return reply(b"400", why)
        except Exception as e:      # a handler bug must refuse, never admit, and keep serving
            log.exception("ZAP handler failed")
            return reply(b"500", f"{type(e).__name__}")


__all__ = ["Gate", "CurveGate", "ZapHandler", "client", "credentials", "control_server", "control_client",
           "control_keys", "check_secret", "SecretError", "MAX_SKEW_S", "MIN_SECRET_BYTES"]
