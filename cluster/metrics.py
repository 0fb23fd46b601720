"""A node's health and Prometheus metrics over HTTP (/healthz, /metrics)."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest


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
        self.last_heard = time.monotonic()
        self.heartbeat_age.set_function(lambda: time.monotonic() - self.last_heard)

    def serve(self, host: str, port: int, health) -> tuple[ThreadingHTTPServer, int]:
        """Start the HTTP endpoint in a daemon thread; `health()` returns a JSON-able dict."""
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/metrics":
                    body, ctype, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
                elif self.path in ("/healthz", "/health"):
                    body, ctype, code = json.dumps(health()).encode(), "application/json", 200
                else:
                    body, ctype, code = b"not found: try /healthz or /metrics\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # requests are not worth a log line each
                pass

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        return server, server.server_address[1]
