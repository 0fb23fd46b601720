"""Matrix products: matmul, mm, bmm, addmm, baddbmm, outer, t, einsum."""
from __future__ import annotations

import builtins
import math
import re

from .. import ir
from ..tensor import Tensor
from ._helpers import _floatish

# --- matrix products ------------------------------------------------------------------------------

def matmul(a, b):
    return a.matmul(b)


def mm(a: Tensor, b: Tensor) -> Tensor:
    if a.ndim != 2 or b.ndim != 2:
        raise ir.ShapeError(f"mm: expected 2-D tensors, got {a.shape} and {b.shape}")
    return a.matmul(b)


def bmm(a: Tensor, b: Tensor) -> Tensor:
    """Batched matmul of [B, N, M] and [B, M, P] (no broadcasting, like torch.bmm)."""
    if a.ndim != 3 or b.ndim != 3:
        raise ir.ShapeError(f"bmm: expected 3-D tensors, got {a.shape} and {b.shape}")
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise ir.ShapeError(f"bmm: shapes {a.shape} and {b.shape} do not fit ([B, N, M] @ [B, M, P])")
    return a.matmul(b)


def addmm(inp, a, b, beta=1, alpha=1):
    return inp * beta + a.matmul(b) * alpha


def baddbmm(inp, a, b, beta=1, alpha=1):
    return inp * beta + bmm(a, b) * alpha


def outer(a: Tensor, b: Tensor) -> Tensor:
    return a.reshape(-1, 1) * b.reshape(1, -1)


def t(x: Tensor) -> Tensor:
    """Transpose of a matrix (0-D and 1-D tensors come back as they are)."""
    if x.ndim > 2:
        raise ValueError(f"t() expects a tensor with <= 2 dimensions, got {x.ndim}")
    return x if x.ndim < 2 else x.transpose(0, 1)


def einsum(equation: str, *operands) -> Tensor:
    """torch.einsum, e.g. "bij,bjk->bik", "ij->ji", "bhqd,bhkd->bhqk", "...ij,...jk->...ik".
    Operands are contracted left to right, two at a time, as batched matmuls; indices that
    appear in one operand only and not in the output are summed first. Repeated indices
    within one operand (diagonals) are not supported."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    eq = equation.replace(" ", "")
    if "->" in eq:
        lhs, out = eq.split("->")
    else:
        lhs, out = eq, None
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise ValueError(f"einsum: equation {equation!r} names {len(terms)} operands, got {len(operands)}")
    letters = set(re.sub(r"[^A-Za-z]", "", eq))
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in letters]
    ell_n = 0
    for term, op in zip(terms, operands):
        if "..." in term:
            ell_n = builtins.max(ell_n, op.ndim - (len(term) - 3))
    ell = "".join(spare[:ell_n])
    subs = []
    for term, op in zip(terms, operands):
        if "..." in term:
            k = op.ndim - (len(term) - 3)
            term = term.replace("...", ell[ell_n - k:])
        if len(term) != op.ndim:
            raise ValueError(f"einsum: term {term!r} does not fit operand of shape {op.shape}")
        if len(set(term)) != len(term):
            raise NotImplementedError(f"einsum: repeated index in {term!r} (diagonals) is not supported")
        subs.append(term)
    if out is None:
        counts = {}
        for s in subs:
            for c in s:
                counts[c] = counts.get(c, 0) + 1
        out = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    else:
        out = out.replace("...", ell)
    sizes = {}
    for s, op in zip(subs, operands):
        for c, n in zip(s, op.shape):
            if c in sizes and n != sizes[c] and n != 1 and sizes[c] != 1:
                raise ir.ShapeError(f"einsum: index {c!r} has sizes {sizes[c]} and {n}")
            sizes[c] = builtins.max(sizes.get(c, 1), n)
    cur, cur_s = operands[0], subs[0]
    rest = list(zip(operands[1:], subs[1:]))

    def needed(later):
        return set(out) | {c for _, s in later for c in s}

    cur, cur_s = _sum_unneeded(cur, cur_s, needed(rest))
    while rest:
        (op, s), rest = rest[0], rest[1:]
        keep = needed(rest)
        op, s = _sum_unneeded(op, s, keep | set(cur_s))
        cur, cur_s = _contract2(cur, cur_s, op, s, keep, sizes)
    # final: sum anything not in out, then permute
    cur, cur_s = _sum_unneeded(cur, cur_s, set(out))
    for c in out:
        if c not in cur_s:
            raise ValueError(f"einsum: output index {c!r} appears in no operand")
    perm = [cur_s.index(c) for c in out]
    res = cur.permute(perm) if perm else cur
    target = tuple(sizes[c] for c in out)
    return res._expand_to(target) if res.shape != target else res


def _sum_unneeded(x, s, keep):
    drop = [i for i, c in enumerate(s) if c not in keep]
    if drop:
        x = x.sum(tuple(drop))
        s = "".join(c for c in s if c in keep)
    return x, s


def _contract2(a, sa, b, sb, keep, sizes):
    """Contract a[sa] with b[sb], keeping the indices in ``keep``: a batched matmul over
    batch (in both, kept), M (a only), K (in both, summed) and N (b only)."""
    batch = [c for c in sa if c in sb and c in keep]
    k = [c for c in sa if c in sb and c not in keep]
    m = [c for c in sa if c not in sb]
    n = [c for c in sb if c not in sa]

    def arrange(x, s, order):
        x = x.permute([s.index(c) for c in order]) if order else x
        shape = tuple(sizes[c] for c in order)
        return x._expand_to(shape) if x.shape != shape else x

    A = arrange(a, sa, batch + m + k)
    B = arrange(b, sb, batch + k + n)
    bs = tuple(sizes[c] for c in batch)
    M, K, N = (math.prod(sizes[c] for c in g) for g in (m, k, n))
    out = _floatish(A).reshape(bs + (M, K)).matmul(_floatish(B).reshape(bs + (K, N)))
    out = out.reshape(bs + tuple(sizes[c] for c in m) + tuple(sizes[c] for c in n))
    return out, "".join(batch + m + n)
