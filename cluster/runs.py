"""Runs: the steps nodes take on their own, between two visits of the driver.

The driver sends each node one `run` message: the job's data plan (the dataset's epoch
order from a seed, the global batch, every rank's share, micro-batches per step) and the
steps to take.  Each node finds its own rows for every step (the same rows the driver
dealt one step at a time before), trains, all-reduces in lockstep with its ring and
reports losses and timings in `progress` messages every `report_s` seconds; the driver
only watches heartbeats and reads those reports.

Stopping at a step boundary: a node asked to `halt` votes 1 in an extra element of the
step's all-reduced buffer, so every rank sees the same sum and stops after the same
step, with no further message.  A run ends with `run_done`: the step the node is at,
the step of the snapshot it can roll back to (-1: none) and why it ended.

The message schemas live here beside the plan they carry and join wire.SCHEMAS at
import (cluster/wire.py's table is shared with the transport's own messages).
"""
from __future__ import annotations

import numpy as np

from . import wire

_NUM = (int, float)
SCHEMAS = {
    # driver -> node
    "run": {"job": ((str,), True), "gen": ((int,), True), "step": ((int,), True), "until": ((int,), True),
            "seed": ((int,), True), "batch": ((int,), True), "shares": ((list,), True),
            "accumulate": ((int,), False), "report_s": (_NUM, False)},
    "halt": {"job": ((str,), True), "run": ((int,), True)},
    # node -> driver: `progress` is unsolicited (MAC'd, bound to the job and ring generation)
    "progress": {"job": ((str,), True), "gen": ((int,), True), "first": ((int,), True), "loss": ((list,), True),
                 "compute": ((list,), True), "allreduce": ((list,), True), "t": ((list,), False),
                 "digests": ((list,), False)},
    "run_done": {"step": ((int,), True), "snap": ((int,), True), "why": ((str,), True),
                 "message": ((str,), False), "code": ((str,), False), "peer": ((str,), False)},
}
for _t, _s in SCHEMAS.items():
    wire.SCHEMAS.setdefault(_t, _s)
wire.TYPE_MAX_BYTES.setdefault("halt", 64 << 10)
wire.TYPE_MAX_BYTES.setdefault("run", 1 << 20)
wire.TYPE_MAX_BYTES.setdefault("run_done", 1 << 20)

MAX_ACCUMULATE = 1024


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """Sample order of one epoch; global batch i is order[i*B:(i+1)*B] (drop last)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def micro_sizes(share: int, accumulate: int) -> list[int]:
    """A rank's share cut into at most `accumulate` micro-batches of near-equal size
    (at most two distinct sizes, so at most two programs)."""
    k = max(1, min(int(accumulate), int(share)))
    return [len(p) for p in np.array_split(np.arange(share), k)]


class DataPlan:
    """Which rows each rank trains on at each step.  Validates what a run message says
    against the node's dataset; raises ValueError naming what does not fit."""

    def __init__(self, rows: int, seed: int, batch: int, shares: list, accumulate: int = 1):
        if not (isinstance(shares, list) and shares and all(type(s) is int and s > 0 for s in shares)):
            raise ValueError(f"shares must be a list of positive integers, got {str(shares)[:100]}")
        if sum(shares) != batch or not 0 < batch <= rows:
            raise ValueError(f"shares {shares} must sum to the global batch {batch}, at most the {rows} rows")
        if not 1 <= accumulate <= MAX_ACCUMULATE:
            raise ValueError(f"accumulate must be in 1..{MAX_ACCUMULATE}, got {accumulate}")
        self.rows, self.seed, self.batch, self.shares, self.accumulate = rows, seed, batch, shares, accumulate
        self.per_epoch = rows // batch
        self.offsets = np.concatenate([[0], np.cumsum(shares)]).tolist()
        self._epoch, self._order = None, None

    def rows_of(self, step: int, rank: int) -> np.ndarray:
        """int64 row indices of `rank`'s share of global batch `step`."""
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_order(self.rows, self.seed, epoch)
        lo = i * self.batch + self.offsets[rank]
        return self._order[lo:lo + self.shares[rank]].astype(np.int64)

    def micro(self, rank: int) -> list[int]:
        return micro_sizes(self.shares[rank], self.accumulate)
