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
# /metrics answers with at most this many steps (evenly thinned, the last one always in):
# a chart needs no more, and a 2M-step run must not cost a request gigabytes.
MAX_POINTS = 4000


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

    def metrics(self, run_id, since=None, max_points=MAX_POINTS):
        """Rows merged by step: [{"step", "epoch", "t", <key>: value, ...}], ascending.
        `since` returns only steps after it, for cheap polling.  More than `max_points`
        steps are thinned to every k-th (the last one always kept) inside SQLite, so the
        memory of a request is bounded whatever the run's length."""
        since = -(1 << 62) if since is None else int(since)
        con = self._db(run_id)
        try:
            n, last = con.execute("SELECT COUNT(DISTINCT step), MAX(step) FROM metric WHERE step > ?",
                                  (since,)).fetchone()
            every = max(1, -(-n // max(1, max_points)))
            rows = con.execute(
                "WITH s AS (SELECT step, ROW_NUMBER() OVER (ORDER BY step) - 1 AS r "
                "           FROM (SELECT DISTINCT step FROM metric WHERE step > ?)) "
                "SELECT m.step, m.epoch, m.t, m.key, m.value FROM metric m JOIN s ON m.step = s.step "
                "WHERE s.r % ? = 0 OR m.step = ? ORDER BY m.step", (since, every, last))
            by_step = {}
            for row in rows:      # a cursor: rows stream from SQLite, never all in a list
                d = by_step.setdefault(row["step"], {"step": row["step"], "epoch": row["epoch"],
                                                     "t": row["t"]})
                d[row["key"]] = row["value"]
        finally:
            con.close()
        return list(by_step.values())

    def graph(self, run_id):
        rows = self._query(run_id, "SELECT body FROM graph")
        return json.loads(rows[0]["body"]) if rows else None

    def kernels(self, run_id):
        rows = self._query(run_id, "SELECT step, body FROM kernel ORDER BY idx")
        return [dict(json.loads(r["body"]), step=r["step"]) for r in rows]

    def weights_path(self, run_id):
        """The run's weights file, which must lie inside the run's own directory: a
        recorded name with a path in it, or a link out of the directory, is refused
        (ValueError) rather than followed."""
        rows = self._query(run_id, "SELECT file FROM weights")
        if not rows:
            return None
        run_dir = (self.root / run_id).resolve()
        name = str(rows[0]["file"])
        path = (run_dir / name).resolve()
        if os.path.basename(name) != name or name in ("", ".", "..") or path.parent != run_dir:
            raise ValueError(f"run {run_id}: its weights file {name!r} is not a file inside the run's directory; "
                             "not read")
        return path

    def set_note(self, run_id, note):
        """The one change the UI can make to a run (only when authenticated)."""
        con = self._db(run_id)
        try:
            with con:
                con.execute("UPDATE run SET note = ?", (str(note)[:2000],))
        finally:
            con.close()
