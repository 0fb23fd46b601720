"""``engine.compile``: trace a step once, then replay its launch list.

The first call runs the step normally while every kernel launch (and every host action,
such as an optimizer advancing its step counter) is recorded with the buffers it used.
Later calls copy the new inputs into the captured input buffers and replay the list: no
graph building, scheduling or codegen. Parameters and optimizer state are updated in
place, so the captured buffers stay the live ones.
"""
from __future__ import annotations

import numpy as np

from . import launch, realize as rz
from .buffers import known_range, note_range
from .bundle import export_bundle
from .runtime import NP_DTYPES
from .tensor import Tensor, empty, tensor, realize_all

__all__ = ["compile", "CompiledStep", "training_step"]


def _flatten(out):
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flatten(o)]
    return []


def _rebuild(out, it):
    if isinstance(out, Tensor):
        return next(it)
    if isinstance(out, tuple):
        return tuple(_rebuild(o, it) for o in out)
    if isinstance(out, list):
        return [_rebuild(o, it) for o in out]
    if isinstance(out, dict):
        return {k: _rebuild(v, it) for k, v in out.items()}
    return out


class CompiledStep:
    def __init__(self, fn):
        self.fn = fn
        self.items = None
        self.signature = None
        self.replays = 0

    def _sig(self, args):
        return tuple((a.shape, a.dtype) if isinstance(a, Tensor) else ("np", np.shape(a), np.asarray(a).dtype.str)
                     if isinstance(a, np.ndarray) else ("py", a) for a in args)

    def __call__(self, *args):
        sig = self._sig(args)
        if self.items is not None and sig == self.signature:
            return self._replay(args)
        return self._trace(args, sig)

    def _trace(self, args, sig):
        # inputs get buffers of their own, which later calls overwrite in place (kept only
        # when the trace succeeds: a failed one must not redirect the last good trace's inputs)
        inputs = []
        call_args = []
        for a in args:
            if isinstance(a, (Tensor, np.ndarray)):
                arr = a.numpy() if isinstance(a, Tensor) else a
                dev = a.device if isinstance(a, Tensor) else None
                t = tensor(arr, dtype=a.dtype if isinstance(a, Tensor) else None, device=dev)
                inputs.append(t)
                call_args.append(t)
            else:
                call_args.append(a)
        with launch.capture() as cap:
            out = self.fn(*call_args)
            outs = _flatten(out)
            realize_all(*outs)
        self.items, self.signature, self.inputs = cap.items, sig, inputs
        self.structure, self.outs = out, outs
        self.device = (self.inputs or outs)[0].device
        return _rebuild(out, iter(self._copies()))

    def _replay(self, args):
        it = iter(self.inputs)
        for a in args:
            if isinstance(a, (Tensor, np.ndarray)):
                t = next(it)
                buf = rz.buffer_of(t.node)
                if isinstance(a, Tensor):
                    a.realize()
                    self.device.copy(rz.buffer_of(a.node), buf, buf.nbytes)
                    note_range(t.node, known_range(a._storage.node))   # a view's values lie in its base's range
                else:
                    arr = np.ascontiguousarray(a, dtype=NP_DTYPES[t.dtype])
                    self.device.upload(arr, dest=buf)
                    note_range(t.node, (int(arr.min()), int(arr.max())) if arr.dtype.kind == "i" and arr.size else None)
        launch.replay(self.items, self.device)
        self.replays += 1
        return _rebuild(self.structure, iter(self._copies()))

    def _copies(self):
        """Fresh tensors for the outputs: the next replay overwrites the captured buffers."""
        res = []
        for t in self.outs:
            src = rz.buffer_of(t.node)
            c = empty(t.shape, t.dtype, t.device)
            self.device.copy(src, rz.buffer_of(c.node), src.nbytes)
            res.append(c)
        return res

    def export_bundle(self, directory) -> dict:
        """All kernels of this step as one .cl file + manifest.json (see engine.bundle)."""
        return export_bundle(self, directory)

    @property
    def launches(self):
        return [it for it in (self.items or []) if isinstance(it, launch.Launch)]


def training_step(model, loss_fn, optimizer, compiled=True):
    """The usual step, ``loss_fn(model(x), y)`` then backward and an optimizer update,
    as one callable ``step(x, y) -> loss`` (traced once and replayed when ``compiled``)."""
    def step(x, y):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss
    return compile(step) if compiled else step


def compile(fn):  # noqa: A001  (the PyTorch name)
    """Trace ``fn`` once; later calls with inputs of the same shapes replay its kernels."""
    return CompiledStep(fn)
