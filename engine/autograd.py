"""Reverse mode over Tensors. Every primitive's gradient rule sits in one table, keyed by
the primitive's name; the rules are written with Tensor ops, so gradients are IR too and
the backward pass is fused and compiled like the forward one.
"""
from __future__ import annotations

import itertools
import math

__all__ = ["GRADS", "backward_pass"]


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
    "PERMUTE": lambda c, g: (g.permute(tuple(sorted(range(len(c.arg)), key=c.arg.__getitem__))),),
    "EXPAND": lambda c, g: (_unbroadcast_sum(g, tuple(i for i, (a, b) in enumerate(zip(c.parents[0].shape, g.shape)) if a != b)),),
    "SHRINK": lambda c, g: (_shrink_grad(g, c.parents[0].shape, c.arg),),
    "PAD": lambda c, g: (g.shrink([(a, a + s, 1) for (a, _), s in zip(c.arg, c.parents[0].shape)]),),
    "WINDOW": lambda c, g: (_window_grad(g, c.parents[0].shape, *c.arg),),
}


def backward_pass(root, grad):
    """Accumulate d(root)/d(leaf) into ``leaf.grad`` for every leaf that requires grad;
    returns the list of leaves that got a gradient."""
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        t, done = stack.pop()
        if done:
            order.append(t)
            continue
        if id(t) in seen or t._ctx is None:
            if t._ctx is None and id(t) not in seen:
                seen.add(id(t))
                order.append(t)
            continue
        seen.add(id(t))
        stack.append((t, True))
        stack.extend((p, False) for p in t._ctx.parents if p.requires_grad)
    grads = {id(root): grad}
    leaves = []
    for t in reversed(order):
        g = grads.pop(id(t), None)
        if g is None:
            continue
        if t._ctx is None:
            if t.requires_grad:
                t.grad = g if t.grad is None else t.grad + g
                leaves.append(t)
            continue
        rule = GRADS.get(t._ctx.op)
        if rule is None:
            raise NotImplementedError(f"no gradient rule for primitive {t._ctx.op}")
        for p, pg in zip(t._ctx.parents, rule(t._ctx, g)):
            if pg is None or not p.requires_grad:
                continue
            if pg.shape != p.shape:
                raise AssertionError(f"gradient rule of {t._ctx.op} gave shape {pg.shape} for a parent of shape {p.shape}")
            grads[id(p)] = pg if id(p) not in grads else grads[id(p)] + pg
    return leaves
