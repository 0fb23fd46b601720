"""The scheduler: cuts an IR DAG into kernels.

Rules (pinned by tests through ``engine.profile``):
- views (reshape/permute/expand/slice/pad/window) are index maps and cost nothing;
- an elementwise chain becomes one kernel; an elementwise node read by two or more
  nodes is materialised once instead of being recomputed;
- a reduce absorbs its elementwise input (prologue);
- a reduce or matmul (an *anchor*) absorbs the elementwise chain after it (epilogue),
  so ``relu(x @ W + b)`` is one kernel;
- a matmul reads A through any view (implicit GEMM for convolution) but needs B
  contiguous, so a B that is not a plain buffer is materialised first.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import ir

__all__ = ["KernelGroup", "schedule"]

ANCHORS = ir.REDUCE | ir.CONTRACTION


@dataclass(frozen=True)
class KernelGroup:
    kind: str                 # "elementwise" | "reduce" | "matmul" | "rand"
    outputs: tuple            # nodes this kernel stores (same shape)
    anchor: ir.Node | None    # the reduce / matmul / rand node, if any
    fused: tuple              # every non-leaf node computed inside the kernel


def _is_view_of_leaf(n, is_leaf, mat) -> bool:
    while n.op in ir.MOVEMENT and not (is_leaf(n) or n in mat):
        n = n.srcs[0]
    return is_leaf(n) or (n in mat)


def schedule(targets, is_leaf, group: bool = False) -> list[KernelGroup]:
    """Kernels that compute ``targets``, in launch order. ``is_leaf(n)``: n already has a
    buffer. With ``group``, same-shaped elementwise targets share one kernel."""
    targets = list(dict.fromkeys(targets))
    tset = set(targets)
    base_is_leaf = is_leaf
    is_leaf = lambda n: n not in tset and base_is_leaf(n)  # noqa: E731  (a target is always computed)
    order = ir.toposort(targets, stop=is_leaf)
    consumers: dict = {n: set() for n in order}
    for n in order:
        if not is_leaf(n):
            for s in n.srcs:
                consumers[s].add(n)

    grouped = set()
    if group:
        shapes = {t.shape for t in targets}
        if len(shapes) == 1 and all(t.op in ir.ELEMENTWISE for t in targets):
            grouped = tset

    mat: set = {t for t in targets if not is_leaf(t)}
    for n in order:
        if is_leaf(n) or n.op in ir.MOVEMENT or n.op in ("CONST", "VAR"):
            continue
        if n.op == "RAND":
            mat.add(n)
        elif n.op in ir.ELEMENTWISE and len(consumers[n]) > 1 and n not in grouped:
            mat.add(n)
        elif n.op == "MATMUL":
            a, b = n.srcs
            if not _is_view_of_leaf(a, is_leaf, mat):
                mat.add(a)
            if not (is_leaf(b) or b in mat):
                mat.add(b)

    # Each anchor absorbs the single-consumer, same-shaped elementwise chain above it.
    owner: dict = {}
    chain_top: dict = {}
    for n in order:
        if n.op not in ANCHORS or is_leaf(n):
            continue
        top = n
        while top not in mat:
            cons = consumers[top]
            if len(cons) != 1:
                break
            c = next(iter(cons))
            if c.op not in ir.ELEMENTWISE or c.shape != n.shape or c in owner or c in grouped:
                break
            owner[c] = n
            top = c
        mat.add(top)
        chain_top[top] = n

    kernels = []
    done_group = False
    for n in order:
        if n not in mat or is_leaf(n):
            continue
        if n in grouped:
            if done_group:
                continue
            done_group = True
            outs = tuple(t for t in order if t in grouped)
            kernels.append(KernelGroup("elementwise", outs, None, _fused(outs, None, is_leaf, mat, grouped)))
            continue
        anchor = chain_top.get(n)
        if anchor is None and n.op == "RAND":
            kernels.append(KernelGroup("rand", (n,), n, (n,)))
            continue
        kind = "elementwise" if anchor is None else ("matmul" if anchor.op == "MATMUL" else "reduce")
        kernels.append(KernelGroup(kind, (n,), anchor, _fused((n,), anchor, is_leaf, mat, ())))
    return kernels


def _fused(outs, anchor, is_leaf, mat, grouped) -> tuple:
    """Nodes computed inside one kernel: everything below its outputs down to leaves."""
    seen, stack, found = set(), list(outs), []
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n not in outs and n is not anchor and (is_leaf(n) or (n in mat and n not in grouped)):
            continue
        if n.op in ("CONST", "VAR"):
            continue
        found.append(n)
        stack.extend(n.srcs)
    return tuple(found)
