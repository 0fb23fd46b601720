"""A node's health and Prometheus metrics over HTTP (/healthz, /metrics).

The endpoint is unauthenticated (probes and Prometheus reach it), so it is served by one
asyncio thread however many clients come: at most MAX_CLIENTS connections at once (more
are closed at once), a request head of at most 8 KB that must arrive within
TIMEOUT_S, one response, then the connection is closed.  A client that connects and
says nothing costs a socket for TIMEOUT_S, never a thread.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

MAX_CLIENTS = 64
TIMEOUT_S = 5.0
MAX_HEAD = 8192


class NodeMetrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.step_seconds = Gauge("engine_node_step_seconds", "Wall time of the last training step", registry=r)
        self.compute_seconds = Gauge("engine_node_compute_seconds", "Forward+backward time of the last step", registry=r)
        self.samples_per_second = Gauge("engine_node_samples_per_second", "Local samples/s of the last step", registry=r)
        self.steps = Counter("engine_node_steps", "Training steps completed", registry=r)
        self.allreduce_bytes = Counter("engine_node_allreduce_bytes", "Bytes sent by all-reduce", registry=r)
        self.allreduce_bandwidth = Gauge("engine_node_allreduce_bandwidth_bytes_per_second",
                                         "Bus bandwidth of the last all-reduce", registry=r)
        self.heartbeat_age = Gauge("engine_node_heartbeat_age_seconds", "Seconds since the driver was last heard", registry=r)
        self.bad_messages = Counter("engine_node_bad_messages", "Refused messages", ["code"], registry=r)
        self.refused_connections = Gauge("engine_node_refused_connections",
                                         "Control connections refused at the handshake or over a connection cap",
                                         registry=r)
        self.last_heard = time.monotonic()
        self.heartbeat_age.set_function(lambda: time.monotonic() - self.last_heard)

    def serve(self, host: str, port: int, health) -> tuple["HttpServer", int]:
        """Start the HTTP endpoint in a daemon thread; `health()` returns a JSON-able dict."""
        registry = self.registry

        def route(path: str):
            if path == "/metrics":
                return 200, CONTENT_TYPE_LATEST, generate_latest(registry)
            if path in ("/healthz", "/health"):
                return 200, "application/json", json.dumps(health()).encode()
            return 404, "text/plain", b"not found: try /healthz or /metrics\n"

        server = HttpServer(host, port, route)
        return server, server.port


class HttpServer:
    """GET-only HTTP/1.0 on one asyncio thread; `route(path) -> (code, content type, body)`."""
    REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}

    def __init__(self, host: str, port: int, route, max_clients: int = MAX_CLIENTS, timeout_s: float = TIMEOUT_S):
        self.route, self.max_clients, self.timeout_s = route, max_clients, timeout_s
        self.active = self.refused = 0
        self.sock = socket.create_server((host, port), reuse_port=False, backlog=128)
        self.port = self.sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), name="metrics-http", daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._client, sock=self.sock, limit=MAX_HEAD))
        ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.server.close()
            self.loop.run_until_complete(self.server.wait_closed())
            self.loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active >= self.max_clients:
            self.refused += 1
            writer.transport.abort()
            return
        self.active += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout_s)
            parts = head.split(b"\r\n", 1)[0].split()
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
                code, ctype, body = 400, "text/plain", b"bad request\n"
            elif parts[0] not in (b"GET", b"HEAD"):
                code, ctype, body = 405, "text/plain", b"GET only\n"
            else:
                code, ctype, body = self.route(parts[1].decode("latin-1").split("?", 1)[0])
            writer.write(f"HTTP/1.0 {code} {self.REASONS.get(code, '')}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + (body if parts[0] != b"HEAD" else b""))
            await asyncio.wait_for(writer.drain(), self.timeout_s)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
            pass                      # slow, silent, oversized or gone: drop it
        finally:
            self.active -= 1
            writer.transport.abort() if writer.transport.is_closing() else writer.close()

    def shutdown(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
