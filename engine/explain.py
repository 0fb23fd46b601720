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
    lowers to on ``device``. A node of the device's graph that stands for one of the
    user's (a GEMM for its MATMUL, a node rebuilt over lowered sources) is reported as
    that node; one the lowering added (a MATMUL's panel views, a split-K sum) is listed as
    an extra node, in the scope of the MATMUL it came from."""

    def __init__(self, outputs, device):
        self.outputs = [t.node for t in outputs]
        self.device = device
        self.nodes = ir.toposort(self.outputs, stop=is_leaf)
        self.ids = {n: i for i, n in enumerate(self.nodes)}
        self._home: dict = {}       # an extra node -> the user's node it was made for
        self.plan = []
        if device:
            origins: dict = {}
            neutral = [rz.computed_as(t) for t in self.outputs]
            lowered = lower(neutral, device, is_leaf, origins)
            # planned from the device's graph, so every node a kernel names is one of it;
            # a split-K target is its sum, in the same memory (as realize computes it)
            self.plan = rz.plan([_unreshaped(d, n) for d, n in zip(lowered, neutral)], device)
            for _, spec in self.plan:
                for n in list(spec.fused) + [a[1] for a in spec.args if len(a) > 1]:
                    home = origins.get(n)
                    if n in self.ids or home not in self.ids:
                        continue
                    if n.op == home.op or n.op == "GEMM":
                        self.ids[n] = self.ids[home]
                    else:
                        self.ids[n] = len(self.nodes)
                        self.nodes.append(n)
                        self._home[n] = home

    @property
    def kernels(self):
        return [spec for _, spec in self.plan]

    def to_json(self) -> dict:
        kernel_of = {}
        for k, (_, spec) in enumerate(self.plan):
            for n in spec.fused:
                if n in self.ids and (n.op == self.nodes[self.ids[n]].op or n.op == "GEMM"):
                    kernel_of.setdefault(self.nodes[self.ids[n]], k)
        nodes = [{"id": self.ids[n], "op": n.op, "shape": list(n.shape), "dtype": n.dtype,
                  "srcs": [self.ids[s] for s in n.srcs if s in self.ids],
                  "scope": scope_of(self._home.get(n, n)), "kernel": kernel_of.get(n)} for n in self.nodes]
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


def _unreshaped(d, n):
    """A lowered target that is a reshape of a value computed for it (a split-K sum): that value."""
    while d is not n and d.op == "RESHAPE" and not is_leaf(d.srcs[0]):
        d = d.srcs[0]
    return d


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
