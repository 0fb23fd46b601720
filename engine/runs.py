"""Runs on disk: the format of a recorded training run and its writer, RunRecorder.

`engine train` records a run with RunRecorder; the UI reads it back with ui.runs.RunStore
(the reader lives with its only user, so the engine never imports the UI).

One directory per run under a root (default ./runs, or $ENGINE_RUNS_DIR), each holding a
SQLite database `run.db` (WAL, so the UI reads while training writes) and, optionally,
`weights.safetensors`. One database per run means a crashed writer can only damage its
own run, and runs can be copied or deleted as plain directories.

Every write commits at once: a crash loses at most the step being written.
"""
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import threading
import time
from pathlib import Path

from .files import atomic_write

__all__ = ["RunRecorder", "connect", "default_root", "valid_run_id", "DB_NAME", "WEIGHTS_NAME"]

DB_NAME = "run.db"
WEIGHTS_NAME = "weights.safetensors"
# Run ids become directory names and URL parts, so they are restricted to a safe alphabet.
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, config TEXT NOT NULL, status TEXT NOT NULL,
    created REAL NOT NULL, heartbeat REAL NOT NULL, finished REAL,
    summary TEXT NOT NULL DEFAULT '{}', note TEXT NOT NULL DEFAULT '',
    pid INTEGER, host TEXT);
CREATE TABLE IF NOT EXISTS metric (
    step INTEGER NOT NULL, epoch INTEGER NOT NULL, t REAL NOT NULL,
    key TEXT NOT NULL, value REAL, PRIMARY KEY (step, key));
CREATE TABLE IF NOT EXISTS graph (id INTEGER PRIMARY KEY CHECK (id = 0), body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kernel (
    idx INTEGER PRIMARY KEY, step INTEGER, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS weights (
    id INTEGER PRIMARY KEY CHECK (id = 0), file TEXT NOT NULL, t REAL NOT NULL);
"""


def default_root():
    return Path(os.environ.get("ENGINE_RUNS_DIR") or "runs")


def valid_run_id(run_id):
    return isinstance(run_id, str) and bool(_RUN_ID.match(run_id)) and ".." not in run_id


def _slug(name):
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)).strip("-.")[:40] or "run"


def connect(path, create=False, any_thread=False):
    """The run database at `path`; a reader (create=False) never creates one."""
    # mode=rw never creates a database by accident when a reader asks for a missing run.
    mode = "rwc" if create else "rw"
    con = sqlite3.connect(f"file:{path}?mode={mode}", uri=True, timeout=10,
                          check_same_thread=not any_thread)
    con.row_factory = sqlite3.Row
    return con


class RunRecorder:
    """Writer side, used by the training process. Also a context manager: leaving the
    block with an exception records the run as crashed with the error message.

    A daemon thread beats every `heartbeat_s` so a slow step is not mistaken for a dead
    process; the beats stop when the process dies, and the UI then shows the run as stale.
    Calls may come from any thread (a lock serialises them on the one connection)."""

    def __init__(self, root, run_id, heartbeat_s=30.0):
        self.run_id = run_id
        self.path = Path(root) / run_id
        self._con = connect(self.path / DB_NAME, create=True, any_thread=True)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = None
        if heartbeat_s:
            self._beat = threading.Thread(target=self._beat_loop, args=(heartbeat_s,),
                                          name=f"run-heartbeat-{run_id}", daemon=True)

    @classmethod
    def create(cls, root=None, name="run", config=None, heartbeat_s=30.0):
        root = Path(root) if root is not None else default_root()
        root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        while True:  # exist_ok=False makes the id unique even with concurrent runs
            run_id = f"{stamp}-{_slug(name)}-{secrets.token_hex(2)}"
            try:
                (root / run_id).mkdir()
                break
            except FileExistsError:
                continue
        rec = cls(root, run_id, heartbeat_s)
        rec._con.execute("PRAGMA journal_mode=WAL")
        rec._con.executescript(_SCHEMA)
        now = time.time()
        with rec._con:
            rec._con.execute(
                "INSERT INTO run (id, name, config, status, created, heartbeat, pid, host)"
                " VALUES (?, ?, ?, 'running', ?, ?, ?, ?)",
                (run_id, str(name), json.dumps(config or {}), now, now, os.getpid(),
                 socket.gethostname()))
        if rec._beat:
            rec._beat.start()
        return rec

    def _beat_loop(self, every):
        while not self._stop.wait(every):
            try:
                self.heartbeat()
            except sqlite3.Error:
                return  # closed underneath us, or the disk went away: nothing to beat for

    def _tx(self, statements):
        """Run [(sql, args), ...] as one transaction and refresh the heartbeat."""
        with self._lock, self._con:  # commits on success, rolls back on error
            for sql, args in statements:
                if isinstance(args, list):
                    self._con.executemany(sql, args)
                else:
                    self._con.execute(sql, args)
            self._con.execute("UPDATE run SET heartbeat = ?", (time.time(),))

    def heartbeat(self):
        self._tx([])

    def log_graph(self, explain):
        self._tx([("INSERT OR REPLACE INTO graph (id, body) VALUES (0, ?)", (json.dumps(explain),))])

    def log_kernels(self, kernels, step=None):
        """Record the profile of one step; replaces the previous profile."""
        self._tx([("DELETE FROM kernel", ()),
                  ("INSERT INTO kernel (idx, step, body) VALUES (?, ?, ?)",
                   [(i, step, json.dumps(k, default=str)) for i, k in enumerate(kernels)])])

    def log_metrics(self, step, epoch=0, **values):
        now = time.time()
        rows = [(int(step), int(epoch), now, k, None if v is None else float(v))
                for k, v in values.items()]
        self._tx([("INSERT OR REPLACE INTO metric (step, epoch, t, key, value) VALUES (?,?,?,?,?)",
                   rows)])

    def log_weights(self, path):
        """Copy a safetensors file into the run (atomically, so a reader never sees half)."""
        atomic_write(self.path / WEIGHTS_NAME, writer=lambda tmp: shutil.copyfile(path, tmp))
        self._tx([("INSERT OR REPLACE INTO weights (id, file, t) VALUES (0, ?, ?)",
                   (WEIGHTS_NAME, time.time()))])

    def finish(self, status="finished", **summary):
        if status not in ("finished", "crashed"):
            raise ValueError(f"finish(status={status!r}): use 'finished' or 'crashed'")
        self._stop.set()
        self._tx([("UPDATE run SET status = ?, finished = ?, summary = ?",
                   (status, time.time(), json.dumps(summary, default=str)))])

    def close(self):
        self._stop.set()
        if self._beat and self._beat.is_alive():
            self._beat.join()
        with self._lock:
            self._con.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.finish("crashed", error=f"{exc_type.__name__}: {exc}")
        self.close()
        return False
