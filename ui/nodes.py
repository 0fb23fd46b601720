"""Where the Nodes page gets engine-node status from.

The source is injectable: any callable returning a list of node dicts. With --cluster
addresses, the UI polls each engine-node's HTTP endpoint (cluster/metrics.py: /healthz
JSON and /metrics Prometheus text). Without, it reads a JSON list that a driver or an
operator writes to <runs>/nodes.json. Each node dict may carry:
  address, devices [str], state, heartbeat (unix time), step_time_s, samples_per_s,
  share (fraction of the global batch), allreduce_gbps
Unknown keys are passed through; heartbeat_age_s is computed here so it is live.
"""
import json
import time
import urllib.request
from pathlib import Path

FIELDS = ("address", "devices", "state", "heartbeat", "step_time_s", "samples_per_s",
          "share", "allreduce_gbps")


class NodeSource:
    """Wraps a callable with a description the page shows ("where is this from?")."""

    def __init__(self, fn, description):
        self.fn, self.description = fn, description

    def __call__(self):
        now = time.time()
        out = []
        for n in self.fn() or []:
            if not isinstance(n, dict):
                raise ValueError(f"node status entries must be objects, got {type(n).__name__}")
            n = dict(n)
            for k in FIELDS:
                n.setdefault(k, None)
            hb = n.get("heartbeat")
            n["heartbeat_age_s"] = (now - hb) if isinstance(hb, (int, float)) else None
            out.append(n)
        return out


def json_file_source(path):
    path = Path(path)

    def read():
        if not path.is_file():
            return []
        data = json.loads(path.read_text())
        return data.get("nodes", []) if isinstance(data, dict) else data
    return NodeSource(read, f"JSON status file {path}")


# Prometheus gauge (cluster/metrics.py) -> node field, with a scale factor.
GAUGES = {"engine_node_step_seconds": ("step_time_s", 1.0),
          "engine_node_samples_per_second": ("samples_per_s", 1.0),
          "engine_node_allreduce_bandwidth_bytes_per_second": ("allreduce_gbps", 1e-9)}


def _gauges(text):
    """Unlabelled samples of a Prometheus text exposition: {name: float}."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith("#") and "{" not in parts[0]:
            try:
                out[parts[0]] = float(parts[1])
            except ValueError:
                continue
    return out


def _get(url, timeout):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def http_source(addresses, timeout_s=1.0):
    """Poll engine-nodes' metrics endpoints (http://host:port, as given on the command
    line, never from a request). A node that does not answer is listed as unreachable."""
    bases = [a if a.startswith(("http://", "https://")) else f"http://{a}" for a in addresses]

    def read():
        nodes = []
        for base in bases:
            base = base.rstrip("/")
            try:
                health = json.loads(_get(base + "/healthz", timeout_s))
                gauges = _gauges(_get(base + "/metrics", timeout_s))
            except (OSError, ValueError) as e:
                nodes.append({"address": base, "state": "unreachable", "error": str(e)})
                continue
            n = {"address": health.get("node") or base, "metrics_url": base,
                 "devices": health.get("devices"), "step": health.get("step"), "job": health.get("job"),
                 "state": "training" if health.get("busy") else health.get("status", "ok"),
                 # the node reports its age since it last heard the driver, not a timestamp
                 "heartbeat": time.time() - float(health.get("heartbeat_age_s") or 0.0)}
            for name, (field, scale) in GAUGES.items():
                if name in gauges:
                    n[field] = gauges[name] * scale
            nodes.append(n)
        # Synchronous steps: every node's step takes as long as the slowest, so its share of
        # the samples/s is exactly its share of the global batch.
        total = sum(n.get("samples_per_s") or 0.0 for n in nodes)
        for n in nodes:
            if total > 0 and n.get("samples_per_s") is not None:
                n["share"] = n["samples_per_s"] / total
        return nodes
    return NodeSource(read, "engine-node metrics endpoints " + ", ".join(bases))


def default_source(runs_root, cluster_addresses=None):
    if cluster_addresses:
        return http_source(cluster_addresses)
    return json_file_source(Path(runs_root) / "nodes.json")
