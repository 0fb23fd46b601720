"""``engine.explain(fn, *args)``: the IR graph of what ``fn`` computes and the kernels it
lowers to, without running them. ``.to_json()`` is what the UI shows."""
from __future__ import annotations

from . import ir, realize as rz
from .autograd import Ctx, grad
from .lowering import lower
from .buffers import is_leaf
from .tensor import scope_of
from .jit import _flatten

__all__ = ["explain", "Explanation"]


class Explanation:
    """The graph as the user built it (device-neutral: MATMUL nodes) and the kernels it
    lowers to on ``device``; each node of the device's graph (a GEMM, its panel views, a
    split-K sum) is reported as the node it stands for."""

    def __init__(self, outputs, device):
        self.outputs = [t.node for t in outputs]
        self.device = device
        self.plan = rz.plan(self.outputs, device) if device else []
        self.nodes = ir.toposort(self.outputs, stop=is_leaf)
        self.ids = {n: i for i, n in enumerate(self.nodes)}
        origins: dict = {}
        if device:
            lower([rz.computed_as(t) for t in self.outputs], device, is_leaf, origins)
        for m, n in origins.items():
            if n in self.ids:
                self.ids.setdefault(m, self.ids[n])

    @property
    def kernels(self):
        return [spec for _, spec in self.plan]

    def to_json(self) -> dict:
        kernel_of = {}
        for k, (_, spec) in enumerate(self.plan):
            for n in spec.fused:
                home = self.nodes[self.ids[n]] if n in self.ids else n
                if n.op == home.op or n.op == "GEMM":     # not a MATMUL's packing views or split-K sum
                    kernel_of.setdefault(home, k)
        nodes = [{"id": self.ids[n], "op": n.op, "shape": list(n.shape), "dtype": n.dtype,
                  "srcs": [self.ids[s] for s in n.srcs if s in self.ids], "scope": scope_of(n),
                  "kernel": kernel_of.get(n)} for n in self.nodes]
        kernels = []
        for k, (_, spec) in enumerate(self.plan):
            d = spec.describe(self.ids)
            d["fused_ops"] = list(dict.fromkeys(d["fused_ops"]))
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
