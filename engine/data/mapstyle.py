"""Map-style data, PyTorch's way: ``Dataset`` / ``TensorDataset`` and a ``DataLoader``
over any object with ``__len__`` and ``__getitem__`` (batching, seeded shuffling,
``drop_last``, torch-like default collation). The streaming Arrow loader is
``engine.data.DataLoader``; this one is ``engine.data.mapstyle.DataLoader``
(exported as ``engine.data.MapDataLoader``).

Collation follows torch's ``default_collate``: numpy arrays and numbers are stacked into
one engine tensor per field (float64 becomes float32, Python ints int64, bools bool);
tuples/lists are collated field by field; dicts key by key; engine tensors are stacked;
strings are kept as lists. ``collate_fn`` replaces it.
"""
from __future__ import annotations

import collections.abc as cabc
import math

import numpy as np

__all__ = ["Dataset", "TensorDataset", "Subset", "ConcatDataset", "DataLoader", "default_collate", "random_split"]


class Dataset:
    """Subclass and define ``__len__`` and ``__getitem__``."""

    def __getitem__(self, index):
        raise NotImplementedError

    def __add__(self, other):
        return ConcatDataset([self, other])


class TensorDataset(Dataset):
    """Rows of tensors (engine tensors or numpy arrays) that share their first dim.
    Engine tensors are read to the host once; items are numpy rows (collated back into
    engine tensors by the loader)."""

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        self.tensors = tensors
        self._host = [_to_host(t) for t in tensors]
        n = len(self._host[0])
        for t in self._host:
            if len(t) != n:
                raise ValueError(f"TensorDataset: size mismatch between tensors ({n} and {len(t)} rows)")

    def __getitem__(self, index):
        return tuple(t[index] for t in self._host)

    def __len__(self):
        return len(self._host[0])


class Subset(Dataset):
    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, list(indices)

    def __getitem__(self, i):
        return self.dataset[self.indices[i]]

    def __len__(self):
        return len(self.indices)


class ConcatDataset(Dataset):
    def __init__(self, datasets):
        self.datasets = list(datasets)
        self.cumulative_sizes = list(np.cumsum([len(d) for d in self.datasets]))

    def __len__(self):
        return int(self.cumulative_sizes[-1]) if self.cumulative_sizes else 0

    def __getitem__(self, i):
        if i < 0:
            i += len(self)
        k = int(np.searchsorted(self.cumulative_sizes, i, side="right"))
        start = 0 if k == 0 else int(self.cumulative_sizes[k - 1])
        return self.datasets[k][i - start]


def random_split(dataset, lengths, generator=None):
    """Split into non-overlapping subsets (lengths as counts or fractions summing to 1)."""
    n = len(dataset)
    if all(0 <= x <= 1 for x in lengths) and abs(sum(lengths) - 1) < 1e-9 and sum(lengths) != n:
        counts = [int(math.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if sum(lengths) != n:
        raise ValueError(f"random_split: lengths {lengths} do not add up to the dataset's {n}")
    rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)
    perm = rng.permutation(n).tolist()
    out, off = [], 0
    for k in lengths:
        out.append(Subset(dataset, perm[off:off + k]))
        off += k
    return out


def _to_host(t):
    try:
        from ..tensor import Tensor
    except ImportError:     # pragma: no cover
        Tensor = ()
    if isinstance(t, Tensor):
        return t.numpy()
    if hasattr(t, "detach") and hasattr(t, "numpy"):   # a torch tensor
        return t.detach().cpu().numpy()
    return np.asarray(t)


def _upload(arr, device):
    from ..tensor import tensor
    arr = np.asarray(arr)
    if arr.dtype == np.float64 or arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    elif arr.dtype.kind in "iu" and arr.dtype not in (np.int32, np.int64):
        arr = arr.astype(np.int64)
    return tensor(np.ascontiguousarray(arr), device=device)


def default_collate(batch, device=None):
    """torch's default_collate for host data: a list of samples -> batched engine tensors
    (recursively through tuples, lists, dicts and namedtuples)."""
    from ..tensor import Tensor, stack
    elem = batch[0]
    if isinstance(elem, Tensor):
        return stack(list(batch), 0)
    if isinstance(elem, np.ndarray) or isinstance(elem, np.generic):
        if isinstance(elem, np.ndarray) and elem.dtype.kind in "SUO":
            return list(batch)
        return _upload(np.stack([np.asarray(b) for b in batch]), device)
    if hasattr(elem, "detach") and hasattr(elem, "numpy"):     # torch tensors
        return _upload(np.stack([b.detach().cpu().numpy() for b in batch]), device)
    if isinstance(elem, bool):
        return _upload(np.array(batch, dtype=bool), device)
    if isinstance(elem, int):
        return _upload(np.array(batch, dtype=np.int64), device)
    if isinstance(elem, float):
        return _upload(np.array(batch, dtype=np.float32), device)
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, cabc.Mapping):
        return {k: default_collate([b[k] for b in batch], device) for k in elem}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):
        return type(elem)(*(default_collate(list(s), device) for s in zip(*batch)))
    if isinstance(elem, cabc.Sequence):
        n = len(elem)
        if any(len(b) != n for b in batch):
            raise RuntimeError("default_collate: each element in the batch should be of equal size")
        cols = [default_collate(list(s), device) for s in zip(*batch)]
        return tuple(cols) if isinstance(elem, tuple) else cols
    raise TypeError(f"default_collate: batch must contain numpy arrays, numbers, dicts, lists or engine tensors; "
                    f"found {type(elem).__name__}")


class DataLoader:
    """Batches from a map-style dataset (anything with ``__len__`` and ``__getitem__``).

    ``shuffle`` draws a new permutation each epoch from a numpy generator seeded by
    ``generator`` (an int seed or a ``numpy.random.Generator``; by default the engine's
    host RNG, so ``engine.manual_seed`` makes it reproducible). ``sampler`` /
    ``batch_sampler`` (iterables of indices / index lists) replace the built-in order.
    ``num_workers`` is accepted and ignored (batches are made in this process)."""

    def __init__(self, dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None, num_workers=0,
                 collate_fn=None, pin_memory=False, drop_last=False, timeout=0, worker_init_fn=None,
                 generator=None, prefetch_factor=None, persistent_workers=False, device=None):
        if not hasattr(dataset, "__getitem__"):
            raise TypeError(f"DataLoader: dataset must have __getitem__ (got {type(dataset).__name__}); "
                            "for Arrow / Parquet use engine.data.DataLoader")
        if batch_sampler is not None and (batch_size != 1 or shuffle or sampler is not None or drop_last):
            raise ValueError("DataLoader: batch_sampler is mutually exclusive with batch_size, shuffle, sampler, drop_last")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler is mutually exclusive with shuffle")
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
        self.sampler, self.batch_sampler, self.device = sampler, batch_sampler, device
        self.collate_fn = collate_fn
        if isinstance(generator, np.random.Generator):
            self._rng = generator
        elif generator is not None:
            self._rng = np.random.default_rng(int(generator))
        else:
            self._rng = None
        self.epoch = 0

    def _order(self):
        if self.sampler is not None:
            return list(self.sampler)
        n = len(self.dataset)
        if not self.shuffle:
            return list(range(n))
        rng = self._rng
        if rng is None:
            from ..tensor import host_rng
            rng = host_rng()
        return rng.permutation(n).tolist()

    def _batches(self):
        if self.batch_sampler is not None:
            return [list(b) for b in self.batch_sampler]
        order = self._order()
        if self.batch_size is None:
            return [[i] for i in order]
        bs = self.batch_size
        out = [order[i:i + bs] for i in range(0, len(order), bs)]
        if self.drop_last and out and len(out[-1]) < bs:
            out.pop()
        return out

    def __iter__(self):
        batches = self._batches()
        self.epoch += 1
        for idx in batches:
            if self.batch_size is None and self.batch_sampler is None:
                sample = self.dataset[idx[0]]
                yield self.collate_fn(sample) if self.collate_fn else _convert(sample, self.device)
                continue
            samples = [self.dataset[i] for i in idx]
            yield self.collate_fn(samples) if self.collate_fn else default_collate(samples, self.device)

    def __len__(self):
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def _convert(sample, device):
    """batch_size=None: one sample, its arrays converted to tensors, nothing stacked."""
    if isinstance(sample, np.ndarray):
        return _upload(sample, device)
    if isinstance(sample, cabc.Mapping):
        return {k: _convert(v, device) for k, v in sample.items()}
    if isinstance(sample, tuple):
        return tuple(_convert(v, device) for v in sample)
    if isinstance(sample, list):
        return [_convert(v, device) for v in sample]
    return sample
