"""``engine.explain(fn, *args)``: the IR graph of what ``fn`` computes and the kernels it
lowers to, without running them. ``.to_json()`` is what the UI shows."""
from __future__ import annotations

from . import ir, realize as rz
from .autograd import Ctx, grad
from .buffers import is_leaf
from .tensor import scope_of
from .jit import _flatten

__all__ = ["explain", "Explanation"]


class Explanation:
    def __init__(self, outputs, device):
        self.outputs = [t.node for t in outputs]
        self.device = device
        self.plan = rz.plan(self.outputs, device.kind if device else "cpu")
        self.nodes = ir.toposort(self.outputs, stop=is_leaf)
        self.ids = {n: i for i, n in enumerate(self.nodes)}

    @property
    def kernels(self):
        return [spec for _, spec in self.plan]

    def to_json(self) -> dict:
        kernel_of = {}
        for k, (_, spec) in enumerate(self.plan):
            for n in spec.fused:
                kernel_of.setdefault(n, k)
        nodes = [{"id": self.ids[n], "op": n.op, "shape": list(n.shape), "dtype": n.dtype,
                  "srcs": [self.ids[s] for s in n.srcs if s in self.ids], "scope": scope_of(n),
                  "kernel": kernel_of.get(n)} for n in self.nodes]
        kernels = []
        for k, (_, spec) in enumerate(self.plan):
            d = spec.describe(self.ids)
            d["index"] = k
            d["output"] = d["outputs"][0] if d["outputs"] else None
            kernels.append(d)
        return {"nodes": nodes, "kernels": kernels, "device": self.device.name if self.device else ""}

    def __str__(self):
        lines = [f"{len(self.nodes)} IR nodes -> {len(self.plan)} kernels"]
        for k, (_, spec) in enumerate(self.plan):
            lines.append(f"  [{k}] {spec.name}  ({spec.template}; fuses {', '.join(spec.ops)}; global {spec.global_size})")
        return "\n".join(lines)


def _grad_leaves(root) -> list:
    """The tensors requiring grad that ``root`` was computed from, in the order the backward
    pass reaches them (from the root down)."""
    if root._ctx is None:
        return [root] if root.requires_grad else []
    order = ir.toposort([root._ctx], srcs=lambda c: tuple(e for e in c.edges if isinstance(e, Ctx)))
    leaves = {}
    for ctx in reversed(order):
        for e in ctx.edges:
            if e is not None and not isinstance(e, Ctx):
                leaves.setdefault(id(e), e)
    return list(leaves.values())


def explain(fn, *args, backward=False) -> Explanation:
    """Trace ``fn(*args)`` lazily; with ``backward=True`` also the gradients of its
    (scalar) result with respect to every input that requires grad."""
    out = fn(*args)
    outs = _flatten(out)
    if backward:
        root = outs[0]
        leaves = _grad_leaves(root)
        grads = grad(root, leaves, allow_unused=True) if leaves else ()
        outs = outs + [g for g in grads if g is not None]
    return Explanation(outs, outs[0].device if outs else None)
