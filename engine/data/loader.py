"""Batches from an ArrowDataset: streamed, shuffled reproducibly, prefetched, sharded, resumable.

The order of an epoch is a pure function of (seed, epoch, part sizes, window): the parts are
permuted, grouped into windows of at most `window` rows, and rows are permuted inside each
window. Only the window being served is in memory (plus the prefetched batches), so a
dataset may be many times larger than `memory_budget`. Because the order needs no data to
compute, a loader can start at any batch of an epoch without reading what comes before:
that is how `load_state_dict` resumes mid-epoch exactly.

Sharding splits each *global* batch of `batch_size` rows between `world` ranks by
`shares` (a faster node takes a larger share); all ranks compute the same global order, so
every row is seen exactly once per epoch across ranks.
"""
from __future__ import annotations

import queue
import threading
import warnings

import numpy as np

import engine
from .dataset import CHUNK_BYTES, ArrowDataset, share_counts

__all__ = ["DataLoader", "upload", "plan_windows"]

DEFAULT_MEMORY_BUDGET = 256 << 20


def upload(array: np.ndarray, device=None):
    """The one place where batches leave host memory: numpy -> engine tensor on `device`."""
    return engine.tensor(np.ascontiguousarray(array), device=device)


def plan_windows(part_rows, seed: int, epoch: int, shuffle: bool, window: int):
    """Part order of an epoch, grouped into windows: a list of lists of part indices."""
    order = np.arange(len(part_rows))
    if shuffle:
        order = np.random.default_rng([seed, epoch, 0]).permutation(len(part_rows))
    windows, current, rows = [], [], 0
    for i in order:
        if current and rows + part_rows[i] > window:
            windows.append(current)
            current, rows = [], 0
        current.append(int(i))
        rows += part_rows[i]
    windows.append(current)
    return windows


class _Window:
    """The decoded parts of one window and the row permutation used inside it."""

    def __init__(self, dataset, parts, perm):
        data = [dataset.read_part(p) for p in parts]
        self.xs = [d[0] for d in data]
        self.ys = [d[1] for d in data]
        self.starts = np.cumsum([0] + [len(y) for y in self.ys])
        self.perm = perm

    def take(self, a: int, b: int):
        """Rows a..b of this window's (permuted) order, copied only where a gather is needed."""
        if self.perm is None and len(self.xs) == 1:
            return self.xs[0][a:b], self.ys[0][a:b]      # zero-copy view of the Arrow buffer
        idx = np.arange(a, b) if self.perm is None else self.perm[a:b]
        if len(self.xs) == 1:
            return self.xs[0][idx], self.ys[0][idx]
        x = np.empty((b - a,) + self.xs[0].shape[1:], self.xs[0].dtype)
        y = np.empty(b - a, self.ys[0].dtype)
        owner = np.searchsorted(self.starts, idx, side="right") - 1
        for p in np.unique(owner):
            sel = owner == p
            local = idx[sel] - self.starts[p]
            x[sel] = self.xs[p][local]
            y[sel] = self.ys[p][local]
        return x, y


class DataLoader:
    """Iterate (x, y) batches of an ArrowDataset.

    batch_size:    rows of the global batch; with world > 1 each rank gets its share of it.
    shuffle, seed: epoch e is shuffled by numpy Generators seeded from (seed, e).
    drop_last:     drop the final short batch (otherwise it is yielded, shorter).
    device:        engine device the batches are uploaded to (None: the default device).
    memory_budget: bytes of decoded rows held at once (window + prefetched batches).
    window:        rows per shuffle window (default: derived from memory_budget). It decides
                   the order, so all ranks of a job must use the same value (and
                   load_state_dict restores the one the state was saved with).
    prefetch:      batches read and uploaded ahead by a background thread (0: none).
    rank, world, shares: this loader's slice of every global batch.
    as_numpy:      yield numpy arrays instead of engine tensors.
    """

    def __init__(self, dataset: ArrowDataset, batch_size: int, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, device=None,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, window: int | None = None,
                 prefetch: int = 2, rank: int = 0, world: int = 1, shares=None,
                 as_numpy: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, {world})")
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, int(batch_size), shuffle, int(seed)
        self.drop_last, self.device, self.prefetch, self.as_numpy = drop_last, device, int(prefetch), as_numpy
        self.memory_budget = int(memory_budget)
        self.rank, self.world = rank, world
        self.shares = [1.0] * world if shares is None else [float(s) for s in shares]
        if len(self.shares) != world:
            raise ValueError(f"{len(self.shares)} shares for world {world}")
        self._part_rows = [p.num_rows for p in dataset.parts]
        self.window = int(window) if window else self._window_from_budget()
        self.epoch, self.batch = 0, 0
        if len(self) == 0:
            raise ValueError(f"{dataset!r} has {len(dataset)} rows: no batch of {batch_size} "
                             "with drop_last=True; lower batch_size")

    def _window_from_budget(self) -> int:
        row = self.dataset.row_bytes
        # Besides the window: prefetched and in-flight batches, and the Arrow buffers of the
        # Parquet chunks being decoded (the decoder grows buffers by doubling).
        biggest = max(self._part_rows)
        decoding = 6 * min(CHUNK_BYTES, biggest * row)
        room = self.memory_budget - (self.prefetch + 4) * self.batch_size * row - decoding
        rows = max(int(room * 0.6) // row, self.batch_size)
        if biggest > rows:
            warnings.warn(f"a part of {biggest} rows ({biggest * row >> 20} MiB decoded) does not fit "
                          f"memory_budget {self.memory_budget >> 20} MiB with batch_size {self.batch_size}; "
                          "write smaller row groups (engine data convert --row-group-size)", stacklevel=3)
        return int(max(rows, biggest))

    def shard(self, rank: int, world: int, shares=None) -> "DataLoader":
        """A loader with the same order and position that yields rank's share of every
        global batch. Positions count global batches, so a job that loses or gains a node
        re-shards at a step boundary and carries on: every row still comes exactly once."""
        other = DataLoader(self.dataset, self.batch_size, self.shuffle, self.seed, self.drop_last,
                           self.device, self.memory_budget, self.window, self.prefetch,
                           rank, world, shares, self.as_numpy)
        other.epoch, other.batch = self.epoch, self.batch
        return other

    # -- sizes --------------------------------------------------------------------------
    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _slice(self, b: int) -> tuple[int, int]:
        """This rank's rows [start, stop) of the epoch's row stream for global batch b."""
        size = min(self.batch_size, len(self.dataset) - b * self.batch_size)
        counts = share_counts(size, self.shares)
        start = b * self.batch_size + sum(counts[:self.rank])
        return start, start + counts[self.rank]

    # -- position -----------------------------------------------------------------------
    def set_epoch(self, epoch: int):
        self.epoch, self.batch = int(epoch), 0

    def state_dict(self) -> dict:
        """JSON-able position: the next batch to yield is `batch` of `epoch`."""
        epoch, batch = self.epoch, self.batch
        if batch >= len(self):
            epoch, batch = epoch + 1, 0
        return {"epoch": epoch, "batch": batch, "seed": self.seed, "shuffle": self.shuffle,
                "batch_size": self.batch_size, "drop_last": self.drop_last, "window": self.window,
                "num_rows": len(self.dataset), "rank": self.rank, "world": self.world,
                "shares": self.shares}

    def load_state_dict(self, state: dict):
        # rank / world / shares may differ: the position is in global batches.
        for key in ("num_rows", "batch_size", "seed", "shuffle", "drop_last"):
            mine = len(self.dataset) if key == "num_rows" else getattr(self, key)
            if key in state and state[key] != mine:
                raise ValueError(f"loader state was saved with {key}={state[key]!r} but this loader "
                                 f"has {key}={mine!r}; resume with the same data and settings")
        if state.get("window") and state["window"] != self.window:
            self.window = int(state["window"])   # the window decides the order: keep the saved one
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

    # -- iteration ----------------------------------------------------------------------
    def _batches(self, epoch: int, first: int, stop: threading.Event | None = None):
        """Numpy (x, y) of this rank for batches first.. of `epoch`."""
        windows = plan_windows(self._part_rows, self.seed, epoch, self.shuffle, self.window)
        ends = np.cumsum([sum(self._part_rows[p] for p in w) for w in windows])
        w, current = -1, None
        for b in range(first, len(self)):
            if stop is not None and stop.is_set():
                return
            start, end = self._slice(b)
            xs, ys = [], []
            while start < end:
                if current is None or start >= ends[w]:
                    current = None   # release the old window before reading the next
                    w = int(np.searchsorted(ends, start, side="right"))
                    rows = int(ends[w] - (ends[w - 1] if w else 0))
                    perm = (np.random.default_rng([self.seed, epoch, 1, w]).permutation(rows)
                            if self.shuffle else None)
                    current = _Window(self.dataset, windows[w], perm)
                lo = int(ends[w - 1]) if w else 0
                piece = min(end, int(ends[w]))
                x, y = current.take(start - lo, piece - lo)
                xs.append(x)
                ys.append(y)
                start = piece
            if len(xs) == 1:
                yield xs[0], ys[0]
            elif xs:
                yield np.concatenate(xs), np.concatenate(ys)
            else:
                shape = (0,) + self.dataset.feature_shape
                yield np.empty(shape, self.dataset.dtype), np.empty(0, self.dataset.label_dtype)

    def _convert(self, x, y):
        if self.as_numpy:
            return np.ascontiguousarray(x), np.ascontiguousarray(y)
        return upload(x, self.device), upload(y, self.device)

    def __iter__(self):
        """Yield the rest of the current epoch from the saved position; a full pass moves the
        loader to the next epoch."""
        epoch, first = self.epoch, self.batch
        if first >= len(self):
            epoch, first = epoch + 1, 0
            self.epoch, self.batch = epoch, 0
        if self.prefetch <= 0:
            for x, y in self._batches(epoch, first):
                item = self._convert(x, y)
                self.batch += 1
                yield item
        else:
            yield from self._prefetched(epoch, first)
        self.epoch, self.batch = epoch + 1, 0

    def _prefetched(self, epoch, first):
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        done = object()

        def put(item):
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def produce():
            try:
                for x, y in self._batches(epoch, first, stop):
                    put(self._convert(x, y))
                put(done)
            except BaseException as e:   # handed to the consumer, raised in its thread
                put(e)

        thread = threading.Thread(target=produce, name="engine-data-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                self.batch += 1
                yield item
        finally:
            stop.set()
            while thread.is_alive():
                try:
                    q.get(timeout=0.05)
                except queue.Empty:
                    pass
            thread.join()
