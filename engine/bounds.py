"""A bounds proof for every generated load, before a kernel is built.

Jobs arrive as data (engine-node builds IR it received), so a view that reads outside its
buffer must be refused, not run. Each kernel's index arithmetic is a list of SSA
statements (``codegen``); starting from the ranges the template guarantees for its own
variables (``gid < numel``, the reduce loop's ``r``, a GEMM's clamped rows, ``k``, the
batch and the guarded epilogue position), interval arithmetic bounds every index, and each
``LOAD(buffer, index)`` must stay inside its buffer. An index the arithmetic cannot bound
is refused too. The GEMM templates' own panel addressing is fixed code whose extents come
from shapes ``ir.gemm`` checks; only the generated parts are proved here.
"""
from __future__ import annotations

__all__ = ["BoundsError", "prove"]


class BoundsError(RuntimeError):
    """A generated kernel could read outside a buffer (or its reads cannot be bounded)."""


def prove(spec) -> None:
    """Raise BoundsError unless every SSA load of ``spec`` is inside its buffer."""
    r = spec.params
    if r is None or spec.template in ("rand", "bundle"):
        return
    sizes = _buffer_sizes(spec, r)
    for free, blocks in _scopes(spec, r):
        env = dict(free)
        for block in blocks:
            for name, op, args, _dtype in block:
                env[name] = _interval(op, [_value(a, env) for a in args], env, spec, sizes, name, args)


def _buffer_sizes(spec, r) -> dict:
    entries = [a for a in spec.args if a[0] in ("out", "in", "var")]
    decl = r.get("args", [])
    if len(entries) != len(decl):
        raise BoundsError(f"{spec.name}: argument list and declarations differ ({len(entries)} vs {len(decl)})")
    return {name: node.numel for (role, node), (kind, name, _dt, _ro) in zip(entries, decl) if kind == "buf"}


def _scopes(spec, r):
    """(free variable ranges, SSA blocks) for each place the template runs SSA code."""
    t = spec.template
    if t == "elementwise":
        return [({"gid": (0, r["numel"] - 1)}, [r["index"], r["body"]])]
    if t in ("reduce", "reduce_group"):     # the same SSA scopes; r < loop_extent in both
        return [({"gid": (0, r["numel"] - 1), "r": (0, r["loop_extent"] - 1)},
                 [r["index"], r["loop_index"], r["body"], r["epilogue"]])]
    if t.startswith("gemm"):
        M, N, K = r["M"], r["N"], r["K"]
        out = spec.outputs[0]
        batches = max(out.numel // max(M * N, 1), 1)
        free = {"bz": (0, batches - 1), "k": (0, K - 1), "ak": (0, K - 1), "am": (0, M - 1),
                "e_m": (0, M - 1), "e_n": (0, N - 1)}
        free.update({f"am{i}": (0, M - 1) for i in range(r.get("R", 0))})
        rows = r.get("a_rows") or []
        return [(free, [r["batch_index"], *rows, r.get("a_load") or [], r["epilogue"]])]
    raise BoundsError(f"{spec.name}: no bounds rules for template {t!r}")


def _value(a, env):
    if isinstance(a, bool):
        return (int(a), int(a))
    if isinstance(a, int):
        return (a, a)
    if isinstance(a, str):
        return env.get(a)
    return None          # a float constant: not an index


def _interval(op, vals, env, spec, sizes, name, args):
    if op == "LOAD":
        buf, idx = args[0], vals[1]
        n = sizes.get(buf)
        if n is None:
            raise BoundsError(f"{spec.name}: {name} loads from {buf!r}, which is not a buffer argument")
        if idx is None or idx[0] < 0 or idx[1] > n - 1:
            raise BoundsError(f"{spec.name}: {name} = {buf}[{args[1]}] may read outside its {n} elements "
                              f"(index range {idx if idx is not None else 'unbounded'})")
        return None
    if any(v is None for v in vals) or op not in _INT_OPS:
        return None
    return _INT_OPS[op](*vals)


def _mul(a, b):
    p = (a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1])
    return (min(p), max(p))


def _div(a, b):
    if b[0] <= 0 <= b[1]:
        return None          # a divisor that may be zero: no bound
    q = [int(x / y) for x in a for y in b]     # C division truncates toward zero
    return (min(q), max(q))


def _mod(a, b):
    if b[0] != b[1] or b[0] <= 0:
        return None
    m = b[0]
    if a[0] >= 0:
        return a if a[1] < m else (0, m - 1)
    return (-(m - 1), m - 1)


_INT_OPS = {
    "IADD": lambda a, b: (a[0] + b[0], a[1] + b[1]),
    "IMUL": _mul,
    "IDIV": _div,
    "IMOD": _mod,
    "ICLAMP": lambda x, lo, hi: (min(max(x[0], lo[0]), hi[1]), min(max(x[1], lo[0]), hi[1])),
    "IINRANGE": lambda *_: (0, 1),
}
