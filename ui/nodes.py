"""Where the Nodes page gets engine-node status from.

The cluster package has no status API the UI can call yet, so the source is injectable:
any callable returning a list of node dicts. The default reads a JSON list that the
cluster driver (or an operator) writes to <runs>/nodes.json. Each node dict may carry:
  address, devices [str], state, heartbeat (unix time), step_time_s, samples_per_s,
  share (fraction of the global batch), allreduce_gbps
Unknown keys are passed through; heartbeat_age_s is computed here so it is live.
"""
import json
import time
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


def default_source(runs_root, cluster_addresses=None):
    src = json_file_source(Path(runs_root) / "nodes.json")
    if cluster_addresses:
        # Until cluster/ exposes a status query, addresses are only shown, not polled.
        src.description += f" (cluster addresses given but not polled: {', '.join(cluster_addresses)})"
    return src
