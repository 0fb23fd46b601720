"""A numpy MLP training step behind the same interface as engine.StepProgram.

It lets the cluster layer (and its tests) run where the OpenCL engine is absent, and
serves as the single-process reference the distributed result is compared with.  Its
JSON names only layer sizes and the batch: still data, never code.
"""
from __future__ import annotations

import numpy as np

from .optimizer import HostOptimizer

FORMAT = "reference-mlp/1"
MAX_WIDTH = 1 << 16


class ReferenceMLP:
    """Model object for the driver: sizes plus float32 parameters (torch layout, W is out x in)."""

    def __init__(self, sizes, seed: int = 0):
        self.sizes = [int(s) for s in sizes]
        rng = np.random.default_rng(seed)
        self.params = {}
        for i, (a, b) in enumerate(zip(self.sizes, self.sizes[1:])):
            bound = 1.0 / np.sqrt(a)
            self.params[f"{i}.weight"] = rng.uniform(-bound, bound, (b, a)).astype(np.float32)
            self.params[f"{i}.bias"] = rng.uniform(-bound, bound, b).astype(np.float32)

    def state_dict(self) -> dict:
        return dict(self.params)

    def load_state_dict(self, params: dict) -> None:
        self.params = {k: np.array(v, np.float32) for k, v in params.items()}

    def logits(self, x, params=None) -> np.ndarray:
        p = params or self.params
        return forward(self.sizes, [p[n] for n in self.params], x)[-1]


def forward(sizes, params, x):
    acts = [np.asarray(x, np.float32).reshape(len(x), -1)]   # like nn.Flatten
    n = len(sizes) - 1
    for i in range(n):
        z = acts[-1] @ params[2 * i].T + params[2 * i + 1]
        acts.append(np.maximum(z, 0) if i < n - 1 else z)
    return acts


class ReferenceProgram:
    def __init__(self, sizes, batch: int):
        self.sizes, self.batch = [int(s) for s in sizes], int(batch)
        self.param_names = [f"{i}.{k}" for i in range(len(self.sizes) - 1) for k in ("weight", "bias")]
        self.param_shapes = [s for a, b in zip(self.sizes, self.sizes[1:]) for s in ([b, a], [b])]

    def to_json(self) -> dict:
        return {"format": FORMAT, "sizes": self.sizes, "batch": self.batch}

    @classmethod
    def from_json(cls, d: dict) -> "ReferenceProgram":
        sizes, batch = d.get("sizes"), d.get("batch")
        if (set(d) != {"format", "sizes", "batch"} or d["format"] != FORMAT or not isinstance(sizes, list)
                or not 2 <= len(sizes) <= 16 or not all(type(s) is int and 0 < s <= MAX_WIDTH for s in sizes)
                or type(batch) is not int or not 0 < batch <= 1 << 20):
            raise ValueError(f"not a valid {FORMAT} program: {str(d)[:200]}")
        return cls(sizes, batch)

    def bind(self, device=None) -> "ReferenceProgram":
        return self

    def run(self, params, x, y):
        """Mean cross-entropy over the batch and its gradients (float32 throughout)."""
        if len(x) != self.batch:
            raise ValueError(f"program traced for batch {self.batch}, got {len(x)}")
        acts = forward(self.sizes, params, x)
        z = acts[-1] - acts[-1].max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        n = len(x)
        loss = float(-np.log(p[np.arange(n), y] + np.float32(1e-12)).mean())
        d = p
        d[np.arange(n), y] -= 1
        d /= np.float32(n)
        grads = [None] * len(params)
        for i in reversed(range(len(self.sizes) - 1)):
            grads[2 * i] = (d.T @ acts[i]).astype(np.float32)
            grads[2 * i + 1] = d.sum(axis=0).astype(np.float32)
            if i:
                d = (d @ params[2 * i]) * (acts[i] > 0)
        return loss, grads


def blobs(n=2000, dim=64, classes=10, seed=0):
    """A synthetic digits-sized classification set (train/test split) for tests and benches."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, dim)).astype(np.float32) * 0.35
    y = rng.integers(0, classes, n).astype(np.int64)
    x = (centers[y] + rng.standard_normal((n, dim)).astype(np.float32)).astype(np.float32)
    k = n * 4 // 5
    return x[:k], y[:k], x[k:], y[k:]


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """Sample order of one epoch; global batch i is order[i*B:(i+1)*B] (drop last).  It lives
    here, below the driver that deals its batches in this order, so reference_fit needs no
    import of the driver (driver -> program -> this module)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def reference_fit(model: ReferenceMLP, spec: dict, x, y, global_batch: int, steps: int, seed: int = 0) -> dict:
    """Single-process training on the same global batches as Cluster.fit (same epoch
    order, same host optimizer): the result distributed training must reproduce."""
    params = [np.array(v, np.float32) for v in model.state_dict().values()]
    opt = HostOptimizer(spec, [p.shape for p in params])
    prog = ReferenceProgram(model.sizes, global_batch)
    per_epoch = len(x) // global_batch
    for step in range(steps):
        epoch, i = divmod(step, per_epoch)
        idx = epoch_order(len(x), seed, epoch)[i * global_batch:(i + 1) * global_batch]
        _, grads = prog.run(params, x[idx], y[idx])
        opt.update(params, grads)
    return dict(zip(model.state_dict(), params))
