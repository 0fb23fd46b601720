"""The UI's reader of recorded runs (engine.runs holds the format and the writer).

Every method takes a run id and returns plain JSON-ready data; an unknown or malformed id
raises KeyError, and a read never creates anything.
"""
import json
import os
import socket
import sqlite3
import time
from pathlib import Path

from engine.runs import DB_NAME, connect, default_root, valid_run_id

__all__ = ["RunStore", "STALE_AFTER_S"]

# A running run that has not written anything for this long is shown as "stale":
# its process most likely died without calling finish().
STALE_AFTER_S = 120.0


def _pid_gone(pid, host):
    """True only when we can tell for sure: same host and no such process."""
    if not pid or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class RunStore:
    """Reader side, used by the UI. Every method takes a run id and returns plain
    JSON-ready data; an unknown or malformed id raises KeyError."""

    def __init__(self, root=None, stale_after_s=STALE_AFTER_S):
        self.root = Path(root) if root is not None else default_root()
        self.stale_after_s = stale_after_s

    def _db(self, run_id):
        if not valid_run_id(run_id):
            raise KeyError(run_id)
        path = self.root / run_id / DB_NAME
        if not path.is_file():
            raise KeyError(run_id)
        return connect(path)

    def _query(self, run_id, sql, args=()):
        con = self._db(run_id)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def list_runs(self):
        if not self.root.is_dir():
            return []
        runs = []
        for d in sorted(self.root.iterdir(), reverse=True):
            if valid_run_id(d.name) and (d / DB_NAME).is_file():
                try:
                    runs.append(self.get(d.name))
                except (KeyError, sqlite3.Error):
                    continue  # a run being created right now, or a damaged one
        return sorted(runs, key=lambda r: r["created"], reverse=True)

    def get(self, run_id):
        con = self._db(run_id)
        try:
            rows = con.execute("SELECT * FROM run").fetchall()
            if not rows:
                raise KeyError(run_id)
            r = dict(rows[0])
            last = con.execute("SELECT MAX(step) AS step, MAX(epoch) AS epoch FROM metric").fetchone()
            latest = {row["key"]: row["value"] for row in con.execute(
                "SELECT key, value FROM metric WHERE step = ?", (last["step"],))}
            has = {t: con.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() is not None
                   for t in ("graph", "kernel", "weights")}
        finally:
            con.close()
        status = r["status"]
        age = time.time() - r["heartbeat"]
        if status == "running" and (age > self.stale_after_s or _pid_gone(r["pid"], r["host"])):
            status = "stale"
        return {"id": r["id"], "name": r["name"], "config": json.loads(r["config"]),
                "status": status, "recorded_status": r["status"], "created": r["created"],
                "heartbeat": r["heartbeat"], "heartbeat_age_s": age, "finished": r["finished"],
                "summary": json.loads(r["summary"]), "note": r["note"], "pid": r["pid"],
                "host": r["host"], "last_step": last["step"], "last_epoch": last["epoch"],
                "latest": latest, "has_graph": has["graph"], "has_kernels": has["kernel"],
                "has_weights": has["weights"]}

    def metrics(self, run_id, since=None):
        """Rows merged by step: [{"step", "epoch", "t", <key>: value, ...}], ascending.
        `since` returns only steps after it, for cheap polling."""
        sql, args = "SELECT step, epoch, t, key, value FROM metric", ()
        if since is not None:
            sql, args = sql + " WHERE step > ?", (int(since),)
        by_step = {}
        for row in self._query(run_id, sql + " ORDER BY step", args):
            d = by_step.setdefault(row["step"], {"step": row["step"], "epoch": row["epoch"],
                                                 "t": row["t"]})
            d[row["key"]] = row["value"]
        return list(by_step.values())

    def graph(self, run_id):
        rows = self._query(run_id, "SELECT body FROM graph")
        return json.loads(rows[0]["body"]) if rows else None

    def kernels(self, run_id):
        rows = self._query(run_id, "SELECT step, body FROM kernel ORDER BY idx")
        return [dict(json.loads(r["body"]), step=r["step"]) for r in rows]

    def weights_path(self, run_id):
        rows = self._query(run_id, "SELECT file FROM weights")
        return self.root / run_id / rows[0]["file"] if rows else None

    def set_note(self, run_id, note):
        """The one change the UI can make to a run (only when authenticated)."""
        con = self._db(run_id)
        try:
            with con:
                con.execute("UPDATE run SET note = ?", (str(note)[:2000],))
        finally:
            con.close()
