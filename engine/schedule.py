"""The scheduler: cuts an IR DAG into kernels.

Rules (pinned by tests through ``engine.profile``):
- views (reshape/permute/expand/slice/pad/window) are index maps and cost nothing;
- an elementwise chain becomes one kernel; an elementwise node read by two or more
  nodes is materialised once instead of being recomputed;
- a reduce absorbs its elementwise input (prologue);
- a reduce or GEMM (an *anchor*) absorbs the elementwise chain after it (epilogue),
  so ``relu(x @ W + b)`` is one kernel; a reduce also through a reshape that only drops
  size-1 dims (``x.sum(1) * 2``, a split-K sum followed by a bias);
- a GEMM reads B (and, where its lowering packed it, A) as panels stored by a packing
  kernel that absorbs the operand's own elementwise prologue; an implicit-GEMM A (a
  convolution's im2col window) is read through its view instead.
The graph it gets is lowered for a device (engine/lowering.py): MATMUL nodes are already
GEMM nodes over panel views.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import ir

__all__ = ["KernelGroup", "schedule"]

ANCHORS = ir.REDUCE | ir.LOWERED
# An elementwise value read by several kernels is recomputed in each when its expression
# has at most this many ops (cheaper than a round trip through memory), else stored once.
INLINE_COST = 4


@dataclass(frozen=True)
class KernelGroup:
    kind: str                 # "elementwise" | "reduce" | "matmul" | "rand"
    outputs: tuple            # nodes this kernel stores (same shape)
    anchor: ir.Node | None    # the reduce / matmul / rand node, if any
    fused: tuple              # every non-leaf node computed inside the kernel


def schedule(targets, is_leaf, group: bool = False) -> list[KernelGroup]:
    """Kernels that compute ``targets``, in launch order. ``is_leaf(n)``: n already has a
    buffer. With ``group``, same-shaped elementwise targets share one kernel."""
    targets = list(dict.fromkeys(targets))
    tset = set(targets)
    base_is_leaf = is_leaf
    is_leaf = lambda n: n not in tset and base_is_leaf(n)  # noqa: E731  (a target is always computed)
    order = ir.toposort(targets, stop=is_leaf)
    consumers: dict = {n: [] for n in order}
    for n in order:
        if not is_leaf(n):
            for s in dict.fromkeys(n.srcs):
                consumers[s].append(n)

    GROUP, MULTI = "group", "multi"   # MULTI: a view read by several kernels, inlined in each
    grouped = set()
    if group and len({t.shape for t in targets}) == 1 and all(t.op in ir.ELEMENTWISE for t in targets):
        grouped = tset

    # dest[n]: the node whose kernel computes n (n itself when n gets its own buffer).
    # Walk consumers before producers, so every consumer's kernel is known.
    dest: dict = {}
    cost: dict = {}
    pure: dict = {}      # n reaches its kernel's output through same-shape elementwise ops only
    anchor_of: dict = {}
    forced: set = set()
    for n in reversed(order):
        if is_leaf(n) or (n.op in ("CONST", "VAR") and n not in tset):
            continue
        if n in grouped:
            dest[n], pure[n] = GROUP, True
            continue
        cons = consumers[n]
        dests = {dest.get(c) for c in cons}
        if n in tset or n in forced or n.op == "RAND" or not cons:
            dest[n] = n
        elif (len(dests) != 1 or MULTI in dests) and (
                n.op in ir.MOVEMENT or (n.op in ir.ELEMENTWISE and _cost(n, is_leaf, cost) <= INLINE_COST)):
            dest[n], pure[n] = MULTI, False    # cheap enough to recompute in each kernel
            continue
        elif len(dests) != 1 or MULTI in dests:
            dest[n] = n
        elif n.op in ANCHORS:
            (d,) = dests
            # a reduce's epilogue may also start with reshapes that only drop or add size-1
            # dims (its keepdim result squeezed, a split-K sum): the same flat positions
            red = n.op in ir.REDUCE
            ok = (d not in (GROUP, MULTI) and d not in anchor_of and d.op in ir.ELEMENTWISE
                  and (d.shape == n.shape or red and _squeezed(d.shape) == _squeezed(n.shape))
                  and all((c.op in ir.ELEMENTWISE and c.shape == n.shape or red and _unit_reshape(c))
                          and pure.get(c) for c in cons))
            dest[n] = d if ok else n
            if ok:
                anchor_of[d] = n
        else:
            dest[n] = next(iter(dests))
        d = dest[n]
        pure[n] = d is n or ((n.op in ir.ELEMENTWISE or _unit_reshape(n))
                             and all(pure.get(c) and dest.get(c) is d for c in cons)
                             and (d is GROUP or n.shape == d.shape))
        if d is n and n.op in ANCHORS:
            anchor_of[n] = n
        if n.op in ir.CONTRACTION:
            raise ValueError(f"schedule: {n} is device-neutral; lower the graph for a device first "
                             f"(engine/lowering.py)")
        if n.op == "GEMM":
            a, b = n.srcs
            if n.arg[3]:           # packed A panels are stored by a packing kernel
                forced.add(a)
            # the value under A's views gets a buffer too: it is what the GEMM (or the
            # packing copy) streams, and what a backward pass reads again
            while a.op in ir.MOVEMENT and not is_leaf(a):
                a = a.srcs[0]
            if not is_leaf(a):
                forced.add(a)
            if not is_leaf(b):
                forced.add(b)      # B panels are read with wide contiguous loads

    kernels = []
    if grouped:
        outs = tuple(t for t in order if t in grouped)
        kernels_group = KernelGroup("elementwise", outs, None, _fused(outs, None, is_leaf, dest))
    for n in order:
        if grouped and n is next(t for t in order if t in grouped):
            kernels.append(kernels_group)
        if dest.get(n) is not n:
            continue
        anchor = anchor_of.get(n)
        if n.op == "RAND":
            kernels.append(KernelGroup("rand", (n,), n, (n,)))
            continue
        kind = "elementwise" if anchor is None else ("matmul" if anchor.op == "GEMM" else "reduce")
        kernels.append(KernelGroup(kind, (n,), anchor, _fused((n,), anchor, is_leaf, dest)))
    return kernels


def _squeezed(shape) -> tuple:
    return tuple(s for s in shape if s != 1)


def _unit_reshape(n) -> bool:
    """A reshape that only drops or adds size-1 dims (same elements, same order)."""
    return n.op == "RESHAPE" and _squeezed(n.shape) == _squeezed(n.srcs[0].shape)


def _cost(n, is_leaf, memo) -> int:
    """Ops needed to recompute n from buffers and anchors (capped just above the limit)."""
    if n in memo:
        return memo[n]
    if is_leaf(n) or n.op in ("CONST", "VAR", "RAND") or n.op in ANCHORS:
        c = 0
    else:
        c = (n.op in ir.ELEMENTWISE) + sum(_cost(s, is_leaf, memo) for s in n.srcs)
    memo[n] = c = min(c, INLINE_COST + 1)
    return c


def _fused(outs, anchor, is_leaf, dest) -> tuple:
    """Nodes computed inside one kernel: everything below its outputs down to leaves and
    to nodes that have buffers of their own."""
    seen, stack, found = set(), list(outs), []
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n not in outs and (is_leaf(n) or dest.get(n) is n):
            continue
        if n.op in ("CONST", "VAR"):
            continue
        found.append(n)
        stack.extend(n.srcs)
    return tuple(found)
