"""Reverse mode over Tensors. Every primitive's gradient rule sits in one table, keyed by
the primitive's name; the rules are written with Tensor ops, so gradients are IR too and
the backward pass is fused and compiled like the forward one.
"""
from __future__ import annotations

import itertools
import math

from .context import no_grad
from .ir import const, toposort

__all__ = ["GRADS", "SAVES", "Ctx", "backward_pass", "grad"]


def _unbroadcast_sum(g, axes):
    return g.sum(dim=axes, keepdim=True) if axes else g


def _max_grad(x, y, g, axes):
    mask = (x == y.expand(x.shape)).float()
    return g.expand(x.shape) * mask / mask.sum(dim=axes, keepdim=True).expand(x.shape)


def _shrink_grad(g, src_shape, bounds):
    for d, (start, stop, step) in enumerate(bounds):
        if step > 1 and g.shape[d] > 0:
            # dilate: put step-1 zeros after each element along d, then trim the tail
            n = g.shape[d]
            g = g.unsqueeze(d + 1)
            widths = [(0, 0)] * len(g.shape)
            widths[d + 1] = (0, step - 1)
            g = g.pad(widths).reshape(g.shape[:d] + (n * step,) + g.shape[d + 2:])
            sl = [(0, s, 1) for s in g.shape]
            sl[d] = (0, (n - 1) * step + 1, 1)
            g = g.shrink(sl)
    widths = []
    for (start, stop, step), s, gs in zip(bounds, src_shape, g.shape):
        widths.append((start, s - start - gs))
    return g.pad(widths)


def _window_grad(g, x_shape, kernel, stride, dil):
    """col2im: the sum, over every kernel offset, of the gradient slice shifted into place."""
    nd = len(kernel)
    lead = len(x_shape) - nd
    out = g.shape[lead:lead + nd]
    total = None
    for offs in _product(kernel):
        sl = [(0, s, 1) for s in g.shape[:lead + nd]] + [(k, k + 1, 1) for k in offs]
        part = g.shrink(sl).reshape(g.shape[:lead + nd])
        bounds = [(0, s, 1) for s in x_shape[:lead]]
        for o, k, st, d, s in zip(out, offs, stride, dil, x_shape[lead:]):
            start = k * d
            bounds.append((start, start + (o - 1) * st + 1, st))
        # the slice x[..., k*d : ... : stride] received `part`; scatter it back by padding
        full = _shrink_grad(part, x_shape, [(a, min(b, s), c) for (a, b, c), s in zip(bounds, x_shape)])
        total = full if total is None else total + full
    return total


def _permute_grad(g, order):
    """``g.permute(order)``. When that swaps the last two dims of a product made in this
    pass (a weight's gradient through ``x @ w.T``: the gradient of ``w.T`` is ``x.T @ g``),
    the swapped product ``(A @ B).T = B.T @ A.T`` is computed instead of the product and a
    transposing copy, where that moves fewer elements: the copy writes M*N elements and B
    was packed (K*N), the swapped product packs A.T (K*M) instead."""
    n = len(order)
    if n >= 2 and order == tuple(range(n - 2)) + (n - 1, n - 2) and g.node.op == "MATMUL" and not g._view:
        a, b = g.node.srcs
        (M, K), N = a.shape[-2:], b.shape[-1]
        if K * M < K * N + M * N:
            wrap = type(g)
            return wrap(b, g.device).transpose(-1, -2).matmul(wrap(a, g.device).transpose(-1, -2))
    return g.permute(order)


def _product(dims):
    return list(itertools.product(*[range(k) for k in dims]))


# rule(ctx, g) -> tuple of gradients, one per parent (None where no gradient flows)
GRADS = {
    "NEG": lambda c, g: (-g,),
    "EXP": lambda c, g: (g * c.out,),
    "LOG": lambda c, g: (g / c.parents[0],),
    "SQRT": lambda c, g: (g * 0.5 / c.out,),
    "RECIP": lambda c, g: (-g * c.out * c.out,),
    "TANH": lambda c, g: (g * (1.0 - c.out * c.out),),
    # from the output, so the pre-activation need not outlive the forward kernel
    "RELU": lambda c, g: ((c.out > 0).where_(g, 0.0),),
    "ERF": lambda c, g: (g * (2.0 / math.sqrt(math.pi)) * (-(c.parents[0] * c.parents[0])).exp(),),
    "CAST": lambda c, g: (g.cast(c.parents[0].dtype),),
    "ADD": lambda c, g: (g, g),
    "MUL": lambda c, g: (g * c.parents[1], g * c.parents[0]),
    "MAX": lambda c, g: (
        g * ((c.parents[0] > c.parents[1]).float() + 0.5 * (c.parents[0] == c.parents[1]).float()),
        g * ((c.parents[1] > c.parents[0]).float() + 0.5 * (c.parents[0] == c.parents[1]).float())),
    "WHERE": lambda c, g: (None, c.parents[0].where_(g, 0.0), c.parents[0].where_(0.0, g)),
    "SUM": lambda c, g: (g.expand(c.parents[0].shape),),
    "RMAX": lambda c, g: (_max_grad(c.parents[0], c.out, g, c.arg),),
    "MATMUL": lambda c, g: (g.matmul(c.parents[1].transpose(-1, -2)), c.parents[0].transpose(-1, -2).matmul(g)),
    "RESHAPE": lambda c, g: (g.reshape(c.parents[0].shape),),
    "PERMUTE": lambda c, g: (_permute_grad(g, tuple(sorted(range(len(c.arg)), key=c.arg.__getitem__))),),
    "EXPAND": lambda c, g: (_unbroadcast_sum(g, tuple(i for i, (a, b) in enumerate(zip(c.parents[0].shape, g.shape)) if a != b)),),
    "SHRINK": lambda c, g: (_shrink_grad(g, c.parents[0].shape, c.arg),),
    "PAD": lambda c, g: (g.shrink([(a, a + s, 1) for (a, _), s in zip(c.arg, c.parents[0].shape)]),),
    "WINDOW": lambda c, g: (_window_grad(g, c.parents[0].shape, *c.arg),),
}


# What each rule reads besides the incoming gradient: parents by index, and "out". A write
# into one of these after the forward op makes its gradient wrong, so backward refuses.
SAVES = {"EXP": ("out",), "SQRT": ("out",), "RECIP": ("out",), "TANH": ("out",), "RELU": ("out",),
         "LOG": (0,), "ERF": (0,), "MUL": (0, 1), "MAX": (0, 1), "WHERE": (0,), "RMAX": (0, "out"),
         "MATMUL": (0, 1)}
# a product's gradient for one factor reads only the other one
_CROSS = frozenset({"MUL", "MATMUL"})
GRADS["CLONE"] = lambda c, g: (g,)


class Ctx:
    """One recorded op (PyTorch's grad_fn): its inputs' values as they were when it ran,
    the edges gradients flow along (the inputs' own Ctx, or the leaf tensor itself), and
    the storage versions of the values its rule reads."""
    __slots__ = ("op", "arg", "parents", "out", "edges", "_saved_versions", "_freed")

    def __init__(self, op, parents, arg, out):
        from_ = type(out)
        self.op, self.arg = op, arg
        # values frozen at the op: a later in-place write to an input changes its storage,
        # not these (they hold the input's node of that moment)
        self.parents = tuple(from_(p.node, p.device) for p in parents)
        self.out = from_(out.node, out.device)
        self.edges = tuple((p._ctx if p._ctx is not None else p) if p.requires_grad else None for p in parents)
        saved = SAVES.get(op, ())
        if op in _CROSS:
            saved = tuple(k for k in saved if parents[1 - k].requires_grad)
        self._saved_versions = tuple(
            (s, s.version) for s in ((out if k == "out" else parents[k])._storage for k in saved))
        self._freed = False

    def name(self) -> str:
        return f"{self.op.title()}Backward"

    def __repr__(self):
        return f"<{self.name()}>"

    def check_saved(self):
        if self._freed:
            raise RuntimeError("Trying to backward through the graph a second time (or directly access saved "
                               "tensors after they have already been freed). Specify retain_graph=True "
                               "if you need to backward through the graph a second time.")
        for storage, version in self._saved_versions:
            if storage.version != version:
                raise RuntimeError(
                    f"one of the variables needed for gradient computation has been modified by an inplace "
                    f"operation: the input of {self.name()} is at version {storage.version}; expected version "
                    f"{version} instead")

    def refresh_version(self, storage):
        self._saved_versions = tuple((s, s.version if s is storage else v) for s, v in self._saved_versions)

    def free(self):
        self.parents, self.out, self._freed = (), None, True


def _is_ctx(e) -> bool:
    return isinstance(e, Ctx)


def backward_pass(root, grad, retain_graph=False):
    """Accumulate d(root)/d(leaf) into ``leaf.grad`` for every leaf that requires grad;
    returns the list of leaves that got a gradient. Walks the recorded ops (Ctx), so a
    tensor written in place after being used routes its gradient to the op it was used as."""
    leaf_grads, _ = _backprop(root, grad, retain_graph)
    leaves = []
    for leaf, g in leaf_grads.values():
        leaf.grad = g if leaf.grad is None else leaf.grad + g
        leaves.append(leaf)
    return leaves


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """torch.autograd.grad: the gradients of ``outputs`` with respect to ``inputs`` (leaves
    or intermediate tensors), returned as a tuple; no ``.grad`` is touched."""
    if create_graph:
        raise NotImplementedError("autograd.grad(create_graph=True): higher-order gradients are not supported")
    outs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    ins = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    gos = list(grad_outputs) if isinstance(grad_outputs, (list, tuple)) else [grad_outputs] * len(outs)
    if any(not t.requires_grad for t in ins):
        raise RuntimeError("autograd.grad: one of the inputs does not require grad")
    if any(not o.requires_grad for o in outs):
        raise RuntimeError("autograd.grad: an output does not require grad (nothing it depends on does)")
    with no_grad():
        if len(outs) == 1:
            root, seed = outs[0], gos[0]
        else:   # several outputs: one scalar, the sum of each output against its gradient
            root, seed = None, None
            for o, go in zip(outs, gos):
                term = o.sum() if go is None else (o * go).sum()
                root = term if root is None else root + term
        if seed is None:
            if root.numel() != 1:
                raise RuntimeError(f"autograd.grad: grad can be implicitly created only for scalar outputs, "
                                   f"got shape {root.shape}")
            seed = type(root)(const(1.0, root.shape), root.device)
        want = {id(t._ctx) for t in ins if t._ctx is not None}
        leaf_grads, captured = _backprop(root, seed, bool(retain_graph), want)
    result = []
    for t in ins:
        g = captured.get(id(t._ctx)) if t._ctx is not None else leaf_grads.get(id(t), (None, None))[1]
        if g is None and not allow_unused:
            raise RuntimeError("autograd.grad: one of the inputs was not used to compute the outputs "
                               "(pass allow_unused=True to get None for it)")
        result.append(g)
    return tuple(result)


def _backprop(root, grad, retain_graph, want=frozenset()):
    """(leaf id -> (leaf, gradient), ctx id -> gradient for the ctx ids in ``want``)."""
    if root._ctx is None:
        return ({id(root): (root, grad)} if root.requires_grad else {}), {}
    order = toposort([root._ctx], srcs=lambda c: tuple(e for e in c.edges if _is_ctx(e)))
    grads = {id(root._ctx): grad}
    leaf_grads: dict = {}
    captured: dict = {}
    for ctx in reversed(order):
        g = grads.pop(id(ctx), None)
        if g is None:
            continue
        if id(ctx) in want:
            captured[id(ctx)] = g
        ctx.check_saved()
        rule = GRADS.get(ctx.op)
        if rule is None:
            raise NotImplementedError(f"no gradient rule for primitive {ctx.op}")
        for p, e, pg in zip(ctx.parents, ctx.edges, rule(ctx, g)):
            if pg is None or e is None:
                continue
            if pg.shape != p.shape:
                raise AssertionError(f"gradient rule of {ctx.op} gave shape {pg.shape} for a parent of shape {p.shape}")
            if _is_ctx(e):
                grads[id(e)] = grads[id(e)] + pg if id(e) in grads else pg
            else:
                leaf_grads[id(e)] = (e, leaf_grads[id(e)][1] + pg) if id(e) in leaf_grads else (e, pg)
    if not retain_graph:
        for ctx in order:
            ctx.free()
    return leaf_grads, captured
