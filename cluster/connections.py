"""Connection and flood limiting for the node's listening sockets: caps on TCP
connections per peer address and in all (ConnectionCap, fed by the socket's monitor
events), and raising the process's open-file limit so a flood of idle connections does
not exhaust it (cluster/README.md, "Threat model")."""
from __future__ import annotations

import logging
import os
import resource
import socket

import zmq
import zmq.utils.monitor

log = logging.getLogger("engine-node")


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: the common soft 1,024 is what a flood of
    idle connections exhausted.  Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return want
    except (ValueError, OSError):
        return soft


class ConnectionCap:
    """Caps a listening ZeroMQ socket's TCP connections, per peer address and in all.

    It reads the socket's monitor events (no thread: the caller polls `sock`); for each
    accepted connection it looks up the peer's address on a duplicate of the descriptor
    and, above a cap, shuts that connection down (libzmq then sees the peer hang up).
    A handshake that does not finish in ZMQ_HANDSHAKE_IVL is dropped by libzmq itself."""
    FAILED = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH

    def __init__(self, target: zmq.Socket, per_peer: int, total: int, name: str = "control"):
        self.per_peer, self.total, self.name = per_peer, total, name
        self.sock = target.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | self.FAILED)
        self.by_fd: dict[int, str] = {}
        self.count: dict[str, int] = {}
        self.dropped = self.failed = 0     # over a cap; handshake refused (wrong or no key, bad token)

    def process(self) -> None:
        while self.sock.poll(0):
            ev = zmq.utils.monitor.recv_monitor_message(self.sock)
            fd = ev["value"]
            if ev["event"] & self.FAILED:
                self.failed += 1
            elif ev["event"] == zmq.EVENT_ACCEPTED:
                try:
                    dup = socket.socket(fileno=os.dup(fd))
                except OSError:
                    continue            # already gone
                try:
                    addr = dup.getpeername()
                    peer = addr[0] if isinstance(addr, tuple) else "local ipc"   # a same-host ring link (ring.py)
                    if self.count.get(peer, 0) >= self.per_peer or len(self.by_fd) >= self.total:
                        dup.shutdown(socket.SHUT_RDWR)
                        self.dropped += 1
                        if self.dropped <= 20 or self.dropped % 1000 == 0:
                            log.warning("dropped a %s connection from %s (%d so far): over %d per peer "
                                        "or %d in all", self.name, peer, self.dropped, self.per_peer, self.total)
                        continue
                    self.by_fd[fd] = peer
                    self.count[peer] = self.count.get(peer, 0) + 1
                except OSError:
                    continue
                finally:
                    dup.close()         # closes the duplicate only
            elif ev["event"] == zmq.EVENT_DISCONNECTED and fd in self.by_fd:
                peer = self.by_fd.pop(fd)
                self.count[peer] -= 1
                if not self.count[peer]:
                    del self.count[peer]

    def close(self) -> None:
        self.sock.close(linger=0)
