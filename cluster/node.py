"""engine-node: the per-host daemon (`engine-node`, `python -m cluster.node`).  Its
parts, by job:

- cluster/daemon.py: NodeDaemon, the control socket on the main thread (hello, ping,
  abort, sessions, the budget watchdog, shutdown) and the node's health;
- cluster/job_handlers.py: the worker thread and the job requests it runs in order;
- cluster/job.py: a job's state (Job, JobError, datasets from the data directory);
- cluster/connections.py: connection caps (ConnectionCap) and the open-file limit;
- cluster/node_cli.py: the command line (`main`).

This module keeps the names that were defined here importable from here.
"""
from __future__ import annotations

import sys

from .connections import ConnectionCap, raise_fd_limit
from .daemon import MAX_SESSIONS, OWNED, QUEUED, NodeDaemon, log, measure_speed
from .job import DATASET_NAME, Job, JobError, local_dataset
from .job_handlers import JobHandlers
from .node_cli import main

__all__ = ["DATASET_NAME", "MAX_SESSIONS", "OWNED", "QUEUED", "ConnectionCap", "Job", "JobError", "JobHandlers",
           "NodeDaemon", "local_dataset", "log", "main", "measure_speed", "raise_fd_limit"]

if __name__ == "__main__":
    sys.exit(main())
