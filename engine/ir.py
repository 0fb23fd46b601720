"""The IR: one immutable, hash-consed node type and the short list of primitive ops.

Everything the Tensor API offers is composed from these primitives, so a backend (the
code generator) only needs to know them. Shapes and dtypes are checked when a node is
built, so a bad shape fails at the user's line with both shapes in the message.
"""
from __future__ import annotations

import itertools
import math
import weakref

__all__ = ["Node", "UNARY", "BINARY", "TERNARY", "ELEMENTWISE", "REDUCE", "MOVEMENT",
           "SOURCE", "DTYPES", "ITEMSIZE", "ShapeError", "buffer", "const", "var", "rand", "unary",
           "binary", "where", "cast", "reduce", "matmul", "reshape", "permute", "expand",
           "shrink", "pad", "window", "toposort", "verify", "result_dtype", "gemm", "with_srcs"]

# The primitive ops, grouped by arity. Everything else is composed from these.
SOURCE = frozenset({"BUFFER", "CONST", "VAR", "RAND"})
UNARY = frozenset({"NEG", "EXP", "LOG", "SQRT", "RECIP", "TANH", "ERF", "RELU", "CAST"})
BINARY = frozenset({"ADD", "MUL", "MAX", "CMPLT", "CMPEQ"})
TERNARY = frozenset({"WHERE"})
ELEMENTWISE = UNARY | BINARY | TERNARY
REDUCE = frozenset({"SUM", "RMAX"})
CONTRACTION = frozenset({"MATMUL"})   # device-neutral: what users' graphs and step programs hold
LOWERED = frozenset({"GEMM"})         # only in a graph lowered for one device (engine/lowering.py)
MOVEMENT = frozenset({"RESHAPE", "PERMUTE", "EXPAND", "SHRINK", "PAD", "WINDOW"})

DTYPES = ("float32", "int32", "int64", "bool")
# bytes per element of each dtype in a device buffer (a bool is one byte)
ITEMSIZE = {"float32": 4, "int32": 4, "int64": 8, "bool": 1}


class ShapeError(ValueError):
    """Raised when an op is built with shapes (or dtypes) that do not fit together."""


_interned: "weakref.WeakValueDictionary[tuple, Node]" = weakref.WeakValueDictionary()
_buffer_ids = itertools.count(1)


class Node:
    """One IR node. Immutable; identical (op, srcs, arg, shape, dtype) give the same object."""
    __slots__ = ("op", "srcs", "arg", "shape", "dtype", "_hash", "__weakref__")

    def __new__(cls, op: str, srcs: tuple, arg, shape: tuple, dtype: str):
        key = (op, tuple(id(s) for s in srcs), arg, shape, dtype)
        node = _interned.get(key)
        if node is not None:
            return node
        node = super().__new__(cls)
        for k, v in zip(cls.__slots__[:5], (op, srcs, arg, shape, dtype)):
            object.__setattr__(node, k, v)
        object.__setattr__(node, "_hash", hash((op, tuple(hash(s) for s in srcs), arg, shape, dtype)))
        _interned[key] = node
        return node

    def __setattr__(self, k, v):
        raise AttributeError("IR nodes are immutable")

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return self is other

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the device buffer that holds this node's values."""
        return self.numel * ITEMSIZE[self.dtype]

    def __repr__(self):
        return f"Node({self.op}, shape={self.shape}, dtype={self.dtype}, arg={self.arg!r})"


def result_dtype(*dtypes: str) -> str:
    order = {"bool": 0, "int32": 1, "int64": 2, "float32": 3}
    return max(dtypes, key=order.__getitem__)


def _shape(shape) -> tuple:
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ShapeError(f"negative dimension in shape {shape}")
    return shape


# --- sources -----------------------------------------------------------------------------

def buffer(shape, dtype="float32") -> Node:
    """A fresh device-buffer source; its identity is its id, never shared."""
    return Node("BUFFER", (), next(_buffer_ids), _shape(shape), dtype)


def const(value, shape=(), dtype="float32") -> Node:
    value = float(value) if dtype == "float32" else int(value)
    return Node("CONST", (), value, _shape(shape), dtype)


def var(var_id: int, dtype="float32") -> Node:
    """A scalar kernel argument read from the host at launch time (lr, Adam's step...)."""
    return Node("VAR", (), var_id, (), dtype)


def rand(shape, seed: int, offset: int) -> Node:
    return Node("RAND", (), (seed, offset), _shape(shape), "float32")


# --- elementwise -------------------------------------------------------------------------

def unary(op: str, x: Node) -> Node:
    assert op in UNARY and op != "CAST", op
    dtype = x.dtype if op in ("NEG", "RELU") else "float32"
    return Node(op, (x,), None, x.shape, dtype)


def cast(x: Node, dtype: str) -> Node:
    if dtype not in DTYPES:
        raise ShapeError(f"unknown dtype {dtype!r}; known: {DTYPES}")
    return x if x.dtype == dtype else Node("CAST", (x,), dtype, x.shape, dtype)


def binary(op: str, a: Node, b: Node) -> Node:
    assert op in BINARY, op
    if a.shape != b.shape:
        raise ShapeError(f"{op}: shapes {a.shape} and {b.shape} differ (broadcast first)")
    dtype = "bool" if op in ("CMPLT", "CMPEQ") else result_dtype(a.dtype, b.dtype)
    return Node(op, (cast(a, result_dtype(a.dtype, b.dtype)), cast(b, result_dtype(a.dtype, b.dtype))),
                None, a.shape, dtype)


def where(c: Node, a: Node, b: Node) -> Node:
    if not (c.shape == a.shape == b.shape):
        raise ShapeError(f"WHERE: shapes {c.shape}, {a.shape}, {b.shape} differ")
    dt = result_dtype(a.dtype, b.dtype)
    return Node("WHERE", (cast(c, "bool"), cast(a, dt), cast(b, dt)), None, a.shape, dt)


# --- reduce and contraction ---------------------------------------------------------------

def reduce(op: str, x: Node, axes) -> Node:
    """Reduce over ``axes``; the reduced dims stay as size 1 (keepdim form)."""
    assert op in REDUCE, op
    axes = tuple(sorted(set(a % len(x.shape) for a in axes))) if x.shape else ()
    shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape))
    if any(x.shape[a] == 0 for a in axes):
        raise ShapeError(f"{op}: cannot reduce an empty dimension of shape {x.shape}")
    dtype = "float32" if op == "SUM" and x.dtype == "bool" else x.dtype
    return Node(op, (cast(x, dtype),), axes, shape, dtype)


def matmul(a: Node, b: Node) -> Node:
    """Batched matmul a [*B, M, K] @ b [*B, K, N] -> [*B, M, N] (batch dims equal).

    Device-neutral: no tile, no operand layout. ``engine/lowering.py`` rewrites it for a
    device (panel views, a GEMM node, maybe split-K) just before scheduling."""
    if len(a.shape) < 2 or len(b.shape) < 2 or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"matmul: shapes {a.shape} and {b.shape} do not fit "
                         f"(need [..., M, K] @ [..., K, N] with equal batch dims)")
    if a.dtype != "float32" or b.dtype != "float32":
        raise ShapeError(f"matmul: float32 only, got {a.dtype} and {b.dtype}")
    return Node("MATMUL", (a, b), None, a.shape[:-1] + b.shape[-1:], "float32")


def gemm(a: Node, bp: Node, dims, variant=()) -> Node:
    """The lowered contraction, over operands a device's lowering laid out as views: B as
    panels [*B, N/W, K, W] (W columns side by side for each k), A as panels [*B, M/R, K, R]
    when R > 0, else A [*B, M, K] read through its own view (implicit GEMM). ``dims`` is
    (M, N, K, R); ``variant``: the kernel variant the lowering chose (sorted (name, value)
    pairs that codegen reads; empty means the template's defaults). A variant with
    ``B_ROW`` = W takes B as it is, [*B, K, N], and reads W-wide column strips of its
    rows in place (a CPU's panels without the packing copy; the template reads a ragged
    last strip column by column). With ``SWAP`` the kernel's product is the transpose of
    the node's: the node is [*B, N, M], stored transposed."""
    M, N, K, R = (int(d) for d in dims)
    variant = tuple(sorted((str(k), v) for k, v in dict(variant).items()))
    strip = dict(variant).get("B_ROW")
    if strip:
        batch = bp.shape[:-2]
        ok_b = len(bp.shape) >= 2 and bp.shape[-2:] == (K, N) and int(strip) > 0
    else:
        batch = bp.shape[:-3]
        ok_b = len(bp.shape) >= 3 and bp.shape[-2] == K and bp.shape[-3] * bp.shape[-1] >= N
    ok_a = (a.shape == batch + (-(-M // R), K, R)) if R else (a.shape == batch + (M, K))
    if not (ok_a and ok_b) or a.dtype != "float32" or bp.dtype != "float32":
        raise ShapeError(f"gemm: operand layouts {a.shape} / {bp.shape} do not fit M={M} N={N} K={K} R={R}")
    shape = batch + ((N, M) if dict(variant).get("SWAP") else (M, N))
    return Node("GEMM", (a, bp), (M, N, K, R, variant), shape, "float32")


def with_srcs(n: Node, srcs) -> Node:
    """``n`` over other sources of the same shapes and dtypes (a rewrite's rebuild)."""
    srcs = tuple(srcs)
    return n if srcs == n.srcs else Node(n.op, srcs, n.arg, n.shape, n.dtype)


# --- movement (views: index maps, never copies by themselves) ----------------------------

def reshape(x: Node, shape) -> Node:
    shape = _shape(shape)
    if math.prod(shape) != x.numel:
        raise ShapeError(f"reshape: cannot view shape {x.shape} ({x.numel} elements) as {shape}")
    if shape == x.shape:
        return x
    if x.op == "RESHAPE":
        return reshape(x.srcs[0], shape)
    return Node("RESHAPE", (x,), shape, shape, x.dtype)


def permute(x: Node, order) -> Node:
    order = tuple(int(o) % max(len(x.shape), 1) for o in order)
    if sorted(order) != list(range(len(x.shape))):
        raise ShapeError(f"permute: {order} is not a permutation of the dims of shape {x.shape}")
    if order == tuple(range(len(order))):
        return x
    return Node("PERMUTE", (x,), order, tuple(x.shape[o] for o in order), x.dtype)


def expand(x: Node, shape) -> Node:
    shape = _shape(shape)
    if len(shape) != len(x.shape) or any(s != t and s != 1 for s, t in zip(x.shape, shape)):
        raise ShapeError(f"expand: cannot broadcast shape {x.shape} to {shape}")
    if shape == x.shape:
        return x
    return Node("EXPAND", (x,), shape, shape, x.dtype)


def shrink(x: Node, bounds) -> Node:
    """bounds: one (start, stop, step) per dim, step > 0, already normalised."""
    bounds = tuple((int(a), int(b), int(c)) for a, b, c in bounds)
    if len(bounds) != len(x.shape) or any(not (0 <= a <= b <= s) or c < 1 for (a, b, c), s in zip(bounds, x.shape)):
        raise ShapeError(f"slice: bounds {bounds} do not fit shape {x.shape}")
    if all(a == 0 and b == s and c == 1 for (a, b, c), s in zip(bounds, x.shape)):
        return x
    shape = tuple(len(range(a, b, c)) for a, b, c in bounds)
    return Node("SHRINK", (x,), bounds, shape, x.dtype)


def pad(x: Node, widths) -> Node:
    """widths: one (before, after) per dim; the new cells are zero."""
    widths = tuple((int(a), int(b)) for a, b in widths)
    if len(widths) != len(x.shape) or any(a < 0 or b < 0 for a, b in widths):
        raise ShapeError(f"pad: widths {widths} do not fit shape {x.shape}")
    if all(a == 0 and b == 0 for a, b in widths):
        return x
    return Node("PAD", (x,), widths, tuple(s + a + b for s, (a, b) in zip(x.shape, widths)), x.dtype)


def window(x: Node, kernel, stride, dilation=None) -> Node:
    """Sliding windows over the last len(kernel) dims: [..., H, W] -> [..., OH, OW, KH, KW]."""
    kernel, stride = tuple(kernel), tuple(stride)
    dilation = tuple(dilation or (1,) * len(kernel))
    nd = len(kernel)
    if len(x.shape) < nd:
        raise ShapeError(f"window: kernel {kernel} has more dims than shape {x.shape}")
    spatial = x.shape[-nd:]
    out = tuple((s - d * (k - 1) - 1) // st + 1 for s, k, st, d in zip(spatial, kernel, stride, dilation))
    if any(o < 1 for o in out):
        raise ShapeError(f"window: kernel {kernel} (dilation {dilation}) is larger than input {spatial}")
    return Node("WINDOW", (x,), (kernel, stride, dilation), x.shape[:-nd] + out + kernel, x.dtype)


# --- graph utilities ---------------------------------------------------------------------

def toposort(roots, stop=lambda n: False, srcs=lambda n: n.srcs) -> list:
    """Nodes reachable from roots, sources first; ``stop(n)`` cuts the walk below n;
    ``srcs(n)`` names the inputs to follow (by default the node's own)."""
    order, seen = [], set()
    for root in roots:
        stack = [(root, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if node in seen:
                continue
            seen.add(node)
            stack.append((node, True))
            if not stop(node):
                stack.extend((s, False) for s in reversed(srcs(node)) if s not in seen)
    return order


def verify(roots) -> None:
    """Check every reachable node is well formed (used between stages in tests)."""
    for n in toposort(roots):
        if n.dtype not in DTYPES:
            raise AssertionError(f"{n}: unknown dtype")
        if n.op in ELEMENTWISE and any(s.shape != n.shape for s in n.srcs):
            raise AssertionError(f"{n}: source shapes {[s.shape for s in n.srcs]} differ")
        if n.op in SOURCE and n.srcs:
            raise AssertionError(f"{n}: a source with inputs")
        if n.op == "MATMUL" and (n.arg is not None or n.srcs[0].shape[-1] != n.srcs[1].shape[-2]):
            raise AssertionError(f"{n}: a device-neutral MATMUL carries no layout and needs fitting operands")
