"""Helpers shared by the cluster tests (a unique module name: tests/ is not a package)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret-0123456789"


def child_env(**extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Procs:
    """Child processes that are always killed when the test ends, pass or fail."""

    def __init__(self):
        self.all = []

    def start(self, args, **kw):
        p = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=kw.pop("env", child_env()),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, **kw)
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

