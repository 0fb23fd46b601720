"""Helpers shared by the cluster tests (a unique module name: tests/ is not a package)."""
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from cluster.reference import reference_fit  # noqa: F401  (the tests import it from here)

ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret-0123456789"


def child_env(**extra):
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Procs:
    """Child processes that are always killed when the test ends, pass or fail."""

    def __init__(self):
        self.all = []

    def start(self, args, **kw):
        """stderr goes to a temporary file, not a pipe: a chatty child must never block
        on a full pipe nobody reads.  p.log() returns what it wrote."""
        err = tempfile.TemporaryFile("w+")
        p = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=kw.pop("env", child_env()),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, **kw)
        p.log = lambda: (err.seek(0), err.read())[1]
        self.all.append(p)
        return p

    def kill_all(self):
        for p in self.all:
            if p.poll() is None:
                p.kill()
        for p in self.all:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass



def start_nodes(procs, n, throttle=None, throttle_from=0, extra_args=(), entry=("-m", "cluster.node"), **env):
    """Start n engine-node daemons on free loopback ports; returns their ready info.
    `entry`: how the child starts one (a module or a script, e.g. a misbehaving node)."""
    nodes = []
    for i in range(n):
        e = child_env(ENGINE_NODE_SECRET=SECRET, **env)
        if throttle and throttle.get(i):
            e["ENGINE_NODE_THROTTLE"] = str(throttle[i])
        p = procs.start([*entry, "--listen", "tcp://127.0.0.1:*", "--metrics", "127.0.0.1:0",
                         "--peer-timeout", "10", "--throttle-from", str(throttle_from), *extra_args], env=e)
        nodes.append(p)
    out = []
    for p in nodes:
        line = p.stdout.readline()
        assert line.startswith("engine-node ready"), (line, p.log())
        info = dict(kv.split("=", 1) for kv in line.split()[2:])
        out.append({"proc": p, **info})
    return out


def accuracy(model, params, x, y):
    return float((model.logits(x, params).argmax(1) == y).mean())


class Session:
    """A hand-driven control connection to one engine-node, as the driver makes it:
    authenticated (CURVE from the secret), hello first, then requests carrying the
    session token.  `last` keeps the frames of the last request, for replaying them."""

    def __init__(self, address, secret=SECRET, authenticate=True):
        import zmq
        from cluster import auth
        self.secret = secret.encode() if isinstance(secret, str) else secret
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if authenticate:
            auth.control_client(self.sock, self.secret, address)
        self.sock.connect(address)
        self.session, self.ids, self.last = None, 0, None

    def send_frames(self, frames, timeout=10.0):
        """Send raw frames; the decoded reply, or None if none came within `timeout`."""
        import zmq
        from cluster import wire
        if not self.sock.poll(int(timeout * 1000), zmq.POLLOUT):
            return None          # no admitted connection to send on
        try:                     # never block: a refused handshake can take the pipe away mid-message
            self.sock.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            return None
        if not self.sock.poll(int(timeout * 1000)):
            return None
        return wire.decode(self.sock.recv_multipart(), secret=self.secret)

    def request(self, type, fields=None, tensors=(), table=None, timeout=10.0):
        from cluster import wire
        self.ids += 1
        f = {**(fields or {}), "id": self.ids, **({"session": self.session} if self.session else {})}
        self.last = wire.encode(type, f, tensors, table, secret=self.secret)
        self.last = [bytes(x) for x in self.last]
        return self.send_frames(self.last, timeout)

    def hello(self):
        info = self.request("hello")
        assert info is not None and info.type == "info", info
        self.session = info["session"]
        return info

    def close(self):
        self.sock.close(linger=0)


def proc_status(pid):
    """{field: value} of /proc/PID/status (VmRSS in kB, Threads...)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.split()[0] if v.split() else ""
    return out


def on_every_rank(links, work, join_s=60):
    """work(r) on each rank r of `links` in a thread of its own -> (results, errors) per
    rank. A rank that fails cancels every link: the others would wait for data that never
    comes."""
    n = len(links)
    results, errors = [None] * n, [None] * n

    def run(r):
        try:
            results[r] = work(r)
        except Exception as e:
            errors[r] = e
            for other in links:
                other.cancel.set()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(join_s)
    return results, errors
