"""The user-facing Tensor: lazy, PyTorch-shaped. Each op records one IR node and, when an
input requires grad, the context its gradient rule (``autograd.GRADS``) needs. Nothing
runs until a value is needed.
"""
from __future__ import annotations

import contextlib
import math
import threading
import weakref

import numpy as np

from . import ir, realize as rz
from .autograd import Ctx, backward_pass
from .buffers import bind_buffer, buffer_of
from .runtime import NP_DTYPES, get_device
from .storage import Storage, apply_view, contiguous_strides, unview, view_strides
from .tune import gemm_tile

__all__ = ["Tensor", "tensor", "empty", "zeros", "ones", "full", "arange", "rand", "randn", "zeros_like",
           "ones_like", "cat", "stack", "where", "no_grad", "manual_seed", "random_state",
           "set_random_state", "realize_all", "scope", "scope_of", "maximum", "minimum"]

_state = threading.local()
SPLIT_REDUCE_AT = 1 << 15     # reductions at least this long run as two kernels
_scopes: "weakref.WeakKeyDictionary[ir.Node, str]" = weakref.WeakKeyDictionary()
_rng = np.random.Generator(np.random.PCG64(0))


def _grad_enabled():
    return getattr(_state, "grad", True)


@contextlib.contextmanager
def no_grad():
    prev = _grad_enabled()
    _state.grad = False
    try:
        yield
    finally:
        _state.grad = prev


@contextlib.contextmanager
def scope(name: str):
    """Label nodes built inside with a module path (shown by explain and the UI)."""
    stack = getattr(_state, "scope", [])
    _state.scope = stack + [name] if name else stack
    try:
        yield
    finally:
        _state.scope = stack


def scope_of(node) -> str:
    return _scopes.get(node, "")


def manual_seed(seed: int):
    global _rng
    _rng = np.random.Generator(np.random.PCG64(int(seed)))


def host_rng() -> np.random.Generator:
    """The engine's host RNG (parameter init, dropout seeds); reseeded by manual_seed."""
    return _rng


def random_state() -> dict:
    return _rng.bit_generator.state


def set_random_state(state: dict):
    _rng.bit_generator.state = state


def _infer_dtype(arr: np.ndarray) -> str:
    if arr.dtype == np.bool_:
        return "bool"
    if np.issubdtype(arr.dtype, np.floating):
        return "float32"
    if arr.dtype == np.int32:
        return "int32"
    if np.issubdtype(arr.dtype, np.integer):
        return "int64"
    raise TypeError(f"unsupported dtype {arr.dtype}")


class Tensor:
    """A lazy value. Its data lives in a ``Storage`` (shared with its views); ``node`` is
    the IR node of its current value, recomputed from the storage after an in-place write."""
    __slots__ = ("_storage", "_view", "_strides", "_vnode", "device", "requires_grad", "grad", "_ctx",
                 "_leaf_view", "__weakref__")
    __array_priority__ = 1000

    def __init__(self, node: ir.Node, device, requires_grad=False, ctx=None):
        self._storage = Storage(node)
        self._view, self._strides, self._vnode = (), None, None
        self._leaf_view = False     # a view of a leaf that requires grad
        self.device = device
        self.requires_grad = requires_grad
        self.grad = None
        self._ctx = ctx
        if node not in _scopes:
            stack = getattr(_state, "scope", None)
            if stack:
                _scopes[node] = ".".join(stack)

    @property
    def node(self) -> ir.Node:
        base = self._storage.node
        if not self._view:
            return base
        cached = self._vnode
        if cached is not None and cached[0] is base:
            return cached[1]
        node = apply_view(base, self._view)
        self._vnode = (base, node)
        return node

    @property
    def _version(self) -> int:
        return self._storage.version

    def _is_view(self) -> bool:
        return bool(self._view)

    def _layout_strides(self) -> tuple:
        return self._strides if self._strides is not None else contiguous_strides(self.shape)

    def is_contiguous(self) -> bool:
        if self._strides is None:
            return True
        return all(a == b for a, b, n in zip(self._strides, contiguous_strides(self.shape), self.shape) if n != 1)

    # --- basic properties ---------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.node.shape

    @property
    def dtype(self) -> str:
        return self.node.dtype

    @property
    def ndim(self) -> int:
        return len(self.node.shape)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return self.node.numel

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, device={self.device.name!r}{grad})"

    # --- making values ----------------------------------------------------------------
    def realize(self) -> "Tensor":
        realize_all(self)
        return self

    def numpy(self) -> np.ndarray:
        self.realize()
        return self.device.download(buffer_of(self.node), self.shape, self.dtype)

    def item(self):
        if self.numel() != 1:
            raise ValueError(f"item() needs a tensor of one element, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self) -> "Tensor":
        """The same storage and view, outside autograd (like PyTorch, writes show in both)."""
        return self._alias(requires_grad=False)

    def _alias(self, requires_grad) -> "Tensor":
        t = Tensor.__new__(Tensor)
        t._storage, t._view, t._strides, t._vnode = self._storage, self._view, self._strides, self._vnode
        t.device, t.requires_grad, t.grad, t._ctx = self.device, requires_grad, None, None
        t._leaf_view = False
        return t

    @property
    def data(self) -> "Tensor":
        return self.detach()

    @data.setter
    def data(self, other: "Tensor"):
        if not isinstance(other, Tensor):
            raise TypeError(f"data must be a Tensor, got {type(other).__name__}")
        if other.device is not self.device:
            raise RuntimeError(f"data: tensors on different devices: {self.device.name} and {other.device.name}")
        self._storage, self._view, self._strides, self._vnode = other._storage, other._view, other._strides, other._vnode

    def requires_grad_(self, flag=True) -> "Tensor":
        if self._ctx is not None and not flag:
            raise RuntimeError("requires_grad_(False): only leaf tensors can stop requiring grad; use detach()")
        self.requires_grad = flag
        return self

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def grad_fn(self):
        return self._ctx

    def backward(self, gradient=None, retain_graph=False):
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad (no input had requires_grad=True)")
        if gradient is None:
            if self.numel() != 1:
                raise RuntimeError(f"backward(): grad can be implicitly created only for scalars, got shape {self.shape}")
            gradient = Tensor(ir.const(1.0, self.shape), self.device)
        with no_grad():
            leaves = backward_pass(self, gradient, retain_graph=retain_graph)
        # One schedule computes the loss and every gradient together, so the forward pass
        # is not run twice.
        realize_all(self, *[t.grad for t in leaves])

    # --- in-place writes (see engine/storage.py) ------------------------------------------
    def _write(self, value: "Tensor") -> "Tensor":
        """Make ``value`` (already this tensor's shape and dtype) this tensor's content, in
        its storage, so every view of the storage sees it and its version goes up."""
        if _grad_enabled():
            if self.requires_grad and (self._ctx is None or self._leaf_view):
                kind = "a view of a leaf Variable" if self._leaf_view else "a leaf Variable"
                raise RuntimeError(f"{kind} that requires grad is being used in an in-place operation "
                                   "(wrap it in engine.no_grad(), or use an out-of-place op)")
            if value.requires_grad or self.requires_grad:
                if self._view:
                    raise NotImplementedError("in-place write into a view of a tensor that requires grad "
                                              "(with grad enabled); write out of place, e.g. with where()")
                # this tensor's history now ends in the op that made ``value``
                self._ctx, self.requires_grad = value._ctx, True
        node = value.node
        if node.dtype != self.dtype:
            node = ir.cast(node, self.dtype)
        store = self._storage
        new_base = unview(store.node, self._view, node) if self._view else node
        del value, node
        if store.realized:
            rz.write_storages([(store, new_base)], self.device)
        else:
            store.node = new_base
            store.version += 1
        if self._ctx is not None:
            # the op that made the new value read this tensor before the write, by design
            self._ctx.refresh_version(store)
        return self

    def _value_like(self, v) -> "Tensor":
        v = self._lift(v)
        if v.device is not self.device:
            raise RuntimeError(f"tensors on different devices: {self.device.name} and {v.device.name}")
        if _broadcast_shape(self.shape, v.shape) != self.shape:
            raise ir.ShapeError(f"in-place: a value of shape {v.shape} cannot be written into shape {self.shape}")
        return v._expand_to(self.shape)

    def _check_inplace_dtype(self, value, op):
        if value.dtype == "float32" and self.dtype != "float32":
            raise RuntimeError(f"{op}: result type float32 can't be cast to the desired output type {self.dtype}")

    def copy_(self, src) -> "Tensor":
        return self._write(self._value_like(src))

    def assign_(self, value) -> "Tensor":
        """Write ``value`` into this tensor's storage, outside autograd (optimizers, buffers)."""
        with no_grad():
            return self._write(self._value_like(value))

    def fill_(self, value) -> "Tensor":
        return self._write(Tensor(ir.const(value, self.shape, self.dtype), self.device))

    def zero_(self) -> "Tensor":
        return self.fill_(0)

    def add_(self, other, alpha=1) -> "Tensor":
        other = self._lift(other)
        res = self + (other * alpha if alpha != 1 else other)
        self._check_inplace_dtype(res, "add_")
        return self._write(res)

    def sub_(self, other, alpha=1) -> "Tensor":
        other = self._lift(other)
        res = self - (other * alpha if alpha != 1 else other)
        self._check_inplace_dtype(res, "sub_")
        return self._write(res)

    def mul_(self, other) -> "Tensor":
        res = self * other
        self._check_inplace_dtype(res, "mul_")
        return self._write(res)

    def div_(self, other) -> "Tensor":
        res = self / other
        self._check_inplace_dtype(res, "div_")
        return self._write(res)

    def clamp_(self, min=None, max=None) -> "Tensor":  # noqa: A002  (PyTorch's names)
        return self._write(self.clamp(min, max))

    def masked_fill_(self, mask, value) -> "Tensor":
        return self._write(self.masked_fill(mask, value))

    def __iadd__(self, other):
        return self.add_(other)

    def __isub__(self, other):
        return self.sub_(other)

    def __imul__(self, other):
        return self.mul_(other)

    def __itruediv__(self, other):
        return self.div_(other)

    def __setitem__(self, key, value):
        if isinstance(key, Tensor) and key.dtype == "bool":
            self.masked_fill_(key, value)
            return
        view = self[key]
        if not view._view and view._storage is not self._storage:
            raise TypeError(f"unsupported index {key!r} for assignment: use ints, slices, None, ... or a bool mask")
        view._write(view._value_like(value))

    def clamp(self, min=None, max=None) -> "Tensor":  # noqa: A002
        out = self
        if min is not None:
            out = out.maximum(min)
        if max is not None:
            out = out.minimum(max)
        return out

    def masked_fill(self, mask, value) -> "Tensor":
        mask = self._lift(mask)
        if mask.dtype != "bool":
            raise TypeError(f"masked_fill: the mask must be bool, got {mask.dtype}")
        v = self._lift(value)
        if v.dtype != self.dtype:
            v = v.cast(self.dtype)
        return mask.where_(v, self)

    def clone(self) -> "Tensor":
        return Tensor._make("CLONE", self.node, (self,))

        # --- construction helpers -----------------------------------------------------------
    def _lift(self, x) -> "Tensor":
        if isinstance(x, Tensor):
            if x.device is not self.device:
                raise RuntimeError(f"tensors on different devices: {self.device.name} and {x.device.name}")
            return x
        if isinstance(x, bool):
            dtype = self.dtype
        elif isinstance(x, int) and self.dtype != "bool":
            dtype = self.dtype      # an int keeps an integer tensor integer
        else:
            dtype = "float32"
        return Tensor(ir.const(x, (), dtype), self.device)

    @staticmethod
    def _make(op, node, parents, arg=None) -> "Tensor":
        dev = parents[0].device
        rg = _grad_enabled() and any(p.requires_grad for p in parents)
        t = Tensor(node, dev, requires_grad=rg)
        if rg:
            t._ctx = Ctx(op, parents, arg, t)
        return t

    def _view_op(self, op, node, arg) -> "Tensor":
        """A view: shares this tensor's storage (writes through it reach the base), unless
        its elements cannot be addressed as strides of the same memory (then a copy, as a
        PyTorch reshape is)."""
        strides = view_strides(op, arg, self.shape, self._layout_strides())
        if strides is None:
            return Tensor._make(op, node, (self,), arg)
        t = self._alias(requires_grad=False)
        t._view, t._strides, t._vnode = self._view + ((op, arg),), strides, (self._storage.node, node)
        if _grad_enabled() and self.requires_grad:
            t.requires_grad = True
            t._ctx = Ctx(op, (self,), arg, t)
            t._leaf_view = self._ctx is None or self._leaf_view
        if node not in _scopes:
            stack = getattr(_state, "scope", None)
            if stack:
                _scopes[node] = ".".join(stack)
        return t

    def _broadcast(self, other) -> tuple:
        other = self._lift(other)
        shape = _broadcast_shape(self.shape, other.shape)
        return self._expand_to(shape), other._expand_to(shape)

    def _expand_to(self, shape) -> "Tensor":
        if self.shape == shape:
            return self
        if self.node.op == "CONST":
            return Tensor(ir.const(self.node.arg, shape, self.dtype), self.device)
        t = self
        if len(shape) > self.ndim:
            t = t.reshape((1,) * (len(shape) - self.ndim) + self.shape)
        return t.expand(shape)

    # --- primitive ops (each has a rule in autograd.GRADS) -----------------------------
    def _unary(self, op) -> "Tensor":
        return Tensor._make(op, ir.unary(op, self.node if op in ("NEG", "RELU") else ir.cast(self.node, "float32")), (self,))

    def _binary(self, op, other, reverse=False) -> "Tensor":
        a, b = self._broadcast(other)
        if reverse:
            a, b = b, a
        return Tensor._make(op, ir.binary(op, a.node, b.node), (a, b))

    def neg(self):
        return self._unary("NEG")

    def exp(self):
        return self._unary("EXP")

    def log(self):
        return self._unary("LOG")

    def sqrt(self):
        return self._unary("SQRT")

    def reciprocal(self):
        return self._unary("RECIP")

    def tanh(self):
        return self._unary("TANH")

    def erf(self):
        return self._unary("ERF")

    def cast(self, dtype) -> "Tensor":
        if dtype == self.dtype:
            return self
        return Tensor._make("CAST", ir.cast(self.node, dtype), (self,))

    def float(self):
        return self.cast("float32")

    def long(self):
        return self.cast("int64")

    def int(self):
        return self.cast("int32")

    def __add__(self, o):
        return self._binary("ADD", o)

    def __radd__(self, o):
        return self._binary("ADD", o, reverse=True)

    def __mul__(self, o):
        return self._binary("MUL", o)

    def __rmul__(self, o):
        return self._binary("MUL", o, reverse=True)

    def maximum(self, o):
        return self._binary("MAX", o)

    def minimum(self, o):
        a, b = self._broadcast(o)
        return -((-a).maximum(-b))

    def __lt__(self, o):
        a, b = self._broadcast(o)
        return Tensor(ir.binary("CMPLT", a.node, b.node), self.device)

    def __gt__(self, o):
        a, b = self._broadcast(o)
        return Tensor(ir.binary("CMPLT", b.node, a.node), self.device)

    def __le__(self, o):
        return (self > o).logical_not()

    def __ge__(self, o):
        return (self < o).logical_not()

    def eq(self, o):
        a, b = self._broadcast(o)
        return Tensor(ir.binary("CMPEQ", a.node, b.node), self.device)

    __eq__ = eq  # like torch: elementwise; Tensors are hashed by identity
    __hash__ = object.__hash__

    def ne(self, o):
        return self.eq(o).logical_not()

    __ne__ = ne

    def logical_not(self):
        return self.eq(False) if self.dtype == "bool" else self.eq(0)

    def where_(self, a, b) -> "Tensor":
        """self is the condition: where(self, a, b)."""
        a, b = self._lift(a), self._lift(b)
        shape = _broadcast_shape(_broadcast_shape(self.shape, a.shape), b.shape)
        c, a, b = self._expand_to(shape), a._expand_to(shape), b._expand_to(shape)
        return Tensor._make("WHERE", ir.where(c.node, a.node, b.node), (c, a, b))

    def sum(self, dim=None, keepdim=False):
        return self._reduce("SUM", dim, keepdim)

    def max(self, dim=None, keepdim=False):
        return self._reduce("RMAX", dim, keepdim)

    def _reduce(self, op, dim, keepdim):
        axes = _axes(dim, self.ndim)
        if not axes:
            return self
        extent = math.prod(self.shape[a] for a in axes)
        if extent >= SPLIT_REDUCE_AT and self.numel() // max(extent, 1) <= 64:
            out = self._reduce_in_two(op, axes)
        else:
            out = Tensor._make(op, ir.reduce(op, self.node, axes), (self,), axes)
        return out if keepdim else out.reshape(tuple(s for i, s in enumerate(out.shape) if i not in axes))

    def _reduce_in_two(self, op, axes):
        """A long reduction as two: chunks first, then the partial results, so a GPU (or
        both PoCL threads) has many work-items instead of one per output."""
        keep = [d for d in range(self.ndim) if d not in axes]
        extent = math.prod(self.shape[a] for a in axes)
        x = self.permute(keep + list(axes)).reshape(tuple(self.shape[d] for d in keep) + (extent,))
        chunk = 1024
        if extent % chunk:
            if op != "SUM":   # zero padding would change a max: split only where it divides
                return Tensor._make(op, ir.reduce(op, self.node, axes), (self,), axes)
            x = x.pad(((0, 0),) * len(keep) + ((0, -extent % chunk),))
        x = x.reshape(x.shape[:-1] + (x.shape[-1] // chunk, chunk))
        part = Tensor._make(op, ir.reduce(op, x.node, (x.ndim - 1,)), (x,), (x.ndim - 1,))
        total = Tensor._make(op, ir.reduce(op, part.node, (x.ndim - 2,)), (part,), (x.ndim - 2,))
        return total.reshape(tuple(1 if i in axes else s for i, s in enumerate(self.shape)))

    def matmul(self, other, _pack_a=None) -> "Tensor":
        other = self._lift(other)
        a, b = self, other
        if a.ndim == 1:
            return a.unsqueeze(0).matmul(b).squeeze(-2)
        if b.ndim == 1:
            return a.matmul(b.unsqueeze(-1)).squeeze(-1)
        if a.shape[-1] != b.shape[-2]:
            raise ir.ShapeError(f"matmul: shapes {a.shape} and {b.shape} do not fit "
                                f"(inner dims {a.shape[-1]} and {b.shape[-2]})")
        if b.ndim == 2 and a.ndim > 2:   # [*B, M, K] @ [K, N]: one 2-D GEMM over all rows
            lead = a.shape[:-1]
            return a.reshape((math.prod(lead), a.shape[-1])).matmul(b, _pack_a).reshape(lead + (b.shape[-1],))
        batch = _broadcast_shape(a.shape[:-2], b.shape[:-2])
        a = a._expand_to(batch + a.shape[-2:])
        b = b._expand_to(batch + b.shape[-2:])
        tile = gemm_tile(a.shape[-2], b.shape[-1], a.shape[-1], self.device)
        if _pack_a is None:
            # a CPU streams A's rows in place as fast as packed panels; a GPU work-group
            # needs A contiguous along its rows for coalesced tile loads
            _pack_a = self.device.kind == "gpu"
        return Tensor._make("MATMUL", ir.matmul(a.node, b.node, tile, pack_a=_pack_a), (a, b))

    __matmul__ = matmul

    def __rmatmul__(self, other):
        return self._lift(other).matmul(self)

    def reshape(self, *shape) -> "Tensor":
        shape = _shape_arg(shape)
        if -1 in shape:
            known = math.prod(s for s in shape if s != -1)
            if shape.count(-1) > 1 or known == 0 or self.numel() % known:
                raise ir.ShapeError(f"reshape: cannot view shape {self.shape} as {shape}")
            shape = tuple(self.numel() // known if s == -1 else s for s in shape)
        if shape == self.shape:
            return self
        return self._view_op("RESHAPE", ir.reshape(self.node, shape), shape)

    def view(self, *shape) -> "Tensor":
        out = self.reshape(*shape)
        if out is not self and out._storage is not self._storage:
            raise RuntimeError(f"view size is not compatible with input tensor's size and stride "
                               f"(shape {self.shape} -> {out.shape}); use .reshape(...) instead")
        return out

    def permute(self, *order) -> "Tensor":
        order = tuple(o % self.ndim for o in _shape_arg(order))
        node = ir.permute(self.node, order)
        return self if node is self.node else self._view_op("PERMUTE", node, order)

    def expand(self, *shape) -> "Tensor":
        shape = _shape_arg(shape)
        shape = tuple(s if n == -1 else n for s, n in zip((1,) * (len(shape) - self.ndim) + self.shape, shape))
        if len(shape) > self.ndim:
            return self.reshape((1,) * (len(shape) - self.ndim) + self.shape).expand(shape)
        if shape == self.shape:
            return self
        return self._view_op("EXPAND", ir.expand(self.node, shape), shape)

    def shrink(self, bounds) -> "Tensor":
        node = ir.shrink(self.node, bounds)
        return self if node is self.node else self._view_op("SHRINK", node, node.arg)

    def pad(self, widths) -> "Tensor":
        node = ir.pad(self.node, widths)
        return self if node is self.node else Tensor._make("PAD", node, (self,), node.arg)

    def window(self, kernel, stride, dilation=None) -> "Tensor":
        node = ir.window(self.node, kernel, stride, dilation)
        return Tensor._make("WINDOW", node, (self,), node.arg)

    # --- composed ops -------------------------------------------------------------------
    def __neg__(self):
        return self.neg()

    def __sub__(self, o):
        return self + (-self._lift(o))

    def __rsub__(self, o):
        return self._lift(o) + (-self)

    def __truediv__(self, o):
        o = self._lift(o)
        if o.node.op == "CONST" and o.dtype == "float32":
            return self * (1.0 / o.node.arg)
        return self * o.float().reciprocal()

    def __rtruediv__(self, o):
        return self._lift(o) * self.float().reciprocal()

    def __pow__(self, p):
        if isinstance(p, (int, float)):
            if p == 2:
                return self * self
            if p == 1:
                return self
            if p == 0.5:
                return self.sqrt()
            if p == -1:
                return self.reciprocal()
            if float(p).is_integer() and 0 < p <= 8:
                out = self
                for _ in range(int(p) - 1):
                    out = out * self
                return out
        return (self.log() * p).exp()

    def __rpow__(self, base):
        return (self * math.log(base)).exp()

    def abs(self):
        return (self < 0).where_(-self, self)

    def relu(self):
        return self._unary("RELU")

    def sigmoid(self):
        return (1.0 + (-self).exp()).reciprocal()

    def gelu(self):
        return 0.5 * self * (1.0 + (self * (1.0 / math.sqrt(2.0))).erf())

    def mean(self, dim=None, keepdim=False):
        axes = _axes(dim, self.ndim)
        n = math.prod(self.shape[a] for a in axes) if axes else 1
        return self.sum(dim, keepdim) * (1.0 / n)

    def var(self, dim=None, keepdim=False, unbiased=True):
        axes = _axes(dim, self.ndim)
        n = math.prod(self.shape[a] for a in axes)
        d = self - self.mean(axes, keepdim=True)
        return (d * d).sum(dim, keepdim) * (1.0 / max(n - (1 if unbiased else 0), 1))

    def min(self, dim=None, keepdim=False):
        return -((-self).max(dim, keepdim))

    def argmax(self, dim=None, keepdim=False):
        x = self.detach()
        if dim is None:
            x, dim = x.reshape(-1), 0
        dim = dim % x.ndim
        n = x.shape[dim]
        pos = arange(n, device=self.device, dtype="float32").reshape(
            tuple(n if i == dim else 1 for i in range(x.ndim)))._expand_to(x.shape)
        hit = x.eq(x.max(dim, keepdim=True)._expand_to(x.shape))
        return hit.where_(pos, float(n)).min(dim, keepdim).long()

    def argmin(self, dim=None, keepdim=False):
        return (-self).argmax(dim, keepdim)

    def softmax(self, dim=-1):
        e = (self - self.max(dim, keepdim=True).detach()).exp()
        return e / e.sum(dim, keepdim=True)

    def log_softmax(self, dim=-1):
        z = self - self.max(dim, keepdim=True).detach()
        return z - z.exp().sum(dim, keepdim=True).log()

    def transpose(self, d0=-2, d1=-1):
        order = list(range(self.ndim))
        order[d0], order[d1] = order[d1], order[d0]
        return self.permute(order)

    @property
    def T(self):
        return self.permute(tuple(reversed(range(self.ndim))))

    def unsqueeze(self, dim):
        dim = dim % (self.ndim + 1)
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def squeeze(self, dim=None):
        if dim is None:
            return self.reshape(tuple(s for s in self.shape if s != 1))
        dim = dim % self.ndim
        if self.shape[dim] != 1:
            return self
        return self.reshape(self.shape[:dim] + self.shape[dim + 1:])

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        s, e = start_dim % self.ndim, end_dim % self.ndim
        return self.reshape(self.shape[:s] + (math.prod(self.shape[s:e + 1]),) + self.shape[e + 1:])

    def contiguous(self):
        return self if self.is_contiguous() else self.clone()

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            fill = self.ndim - (len(key) - 1 - sum(k is None for k in key))
            key = key[:i] + (slice(None),) * fill + key[i + 1:]
        bounds, out_shape, dim = [], [], 0
        for k in key:
            if k is None:
                out_shape.append(1)
                continue
            if dim >= self.ndim:
                raise IndexError(f"too many indices for tensor of shape {self.shape}")
            size = self.shape[dim]
            if isinstance(k, (int, np.integer)):
                k = int(k)
                if not -size <= k < size:
                    raise IndexError(f"index {k} is out of bounds for dim {dim} of size {size}")
                k %= size
                bounds.append((k, k + 1, 1))
            elif isinstance(k, slice):
                start, stop, step = k.indices(size)
                if step < 1:
                    raise IndexError("negative slice steps are not supported")
                stop = max(start, stop)
                bounds.append((start, stop, step))
                out_shape.append(len(range(start, stop, step)))
            else:
                raise TypeError(f"unsupported index {k!r}: use ints, slices, None and ...")
            dim += 1
        for d in range(dim, self.ndim):
            bounds.append((0, self.shape[d], 1))
            out_shape.append(self.shape[d])
        return self.shrink(bounds).reshape(tuple(out_shape))

    # numpy-style conveniences used by nn
    def __bool__(self):
        if self.numel() != 1:
            raise RuntimeError("the truth value of a tensor with more than one element is ambiguous")
        return bool(self.item())

    def __float__(self):
        return float(self.item())


def _broadcast_shape(a, b) -> tuple:
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            raise ir.ShapeError(f"shapes {a} and {b} cannot be broadcast together")
        out.append(max(x, y) if x != 0 and y != 0 else 0)
    return tuple(out)


def _axes(dim, ndim) -> tuple:
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, int):
        dim = (dim,)
    for d in dim:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"dim {d} out of range for a tensor of {ndim} dims")
    return tuple(sorted(d % ndim for d in dim))


def _shape_arg(shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)


# --- creation ------------------------------------------------------------------------------

def tensor(data, dtype=None, device=None, requires_grad=False) -> Tensor:
    dev = get_device(device)
    if isinstance(data, Tensor):
        data = data.numpy()
    arr = np.asarray(data)
    dt = dtype or _infer_dtype(arr)
    if dt not in NP_DTYPES:
        raise TypeError(f"unsupported dtype {dt!r}; supported: {list(NP_DTYPES)}")
    arr = np.ascontiguousarray(arr, dtype=NP_DTYPES[dt])
    node = ir.buffer(arr.shape, dt)
    bind_buffer(node, dev.upload(arr))
    return Tensor(node, dev, requires_grad=requires_grad)


def empty(shape, dtype="float32", device=None) -> Tensor:
    """A tensor backed by a fresh, uninitialised device buffer."""
    dev = get_device(device)
    node = ir.buffer(_shape_arg(shape if isinstance(shape, tuple) else (shape,)), dtype)
    bind_buffer(node, dev.alloc(node.numel * np.dtype(NP_DTYPES[dtype]).itemsize))
    return Tensor(node, dev)


def full(shape, value, dtype="float32", device=None, requires_grad=False) -> Tensor:
    shape = _shape_arg(shape if isinstance(shape, tuple) else (shape,))
    t = Tensor(ir.const(value, shape, dtype), get_device(device), requires_grad=requires_grad)
    return t.realize() if requires_grad else t


def zeros(*shape, dtype="float32", device=None, requires_grad=False) -> Tensor:
    return full(_shape_arg(shape), 0, dtype, device, requires_grad)


def ones(*shape, dtype="float32", device=None, requires_grad=False) -> Tensor:
    return full(_shape_arg(shape), 1, dtype, device, requires_grad)


def zeros_like(t: Tensor) -> Tensor:
    return full(t.shape, 0, t.dtype, t.device)


def ones_like(t: Tensor) -> Tensor:
    return full(t.shape, 1, t.dtype, t.device)


def arange(start, end=None, step=1, dtype=None, device=None) -> Tensor:
    if end is None:
        start, end = 0, start
    arr = np.arange(start, end, step)
    return tensor(arr, dtype=dtype or ("float32" if arr.dtype.kind == "f" else "int64"), device=device)


def rand(*shape, device=None, requires_grad=False) -> Tensor:
    return tensor(_rng.random(_shape_arg(shape), dtype=np.float32), device=device, requires_grad=requires_grad)


def randn(*shape, device=None, requires_grad=False) -> Tensor:
    return tensor(_rng.standard_normal(_shape_arg(shape), dtype=np.float32), device=device, requires_grad=requires_grad)


def device_rand(shape, device) -> Tensor:
    """Uniform [0, 1) generated on the device (dropout masks); seeded from the engine RNG."""
    seed = int(_rng.integers(0, 2**31 - 1))
    return Tensor(ir.rand(shape, seed, 0), device)


def where(cond: Tensor, a, b) -> Tensor:
    return cond.where_(a, b)


def maximum(a: Tensor, b) -> Tensor:
    return a.maximum(b)


def minimum(a: Tensor, b) -> Tensor:
    return a.minimum(b)


def cat(tensors, dim=0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat() needs at least one tensor")
    first = tensors[0]
    dim = dim % first.ndim
    for t in tensors[1:]:
        if t.ndim != first.ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != dim):
            raise ir.ShapeError(f"cat: shapes {first.shape} and {t.shape} differ outside dim {dim}")
    total = sum(t.shape[dim] for t in tensors)
    out, offset = None, 0
    for t in tensors:
        widths = [(0, 0)] * t.ndim
        widths[dim] = (offset, total - offset - t.shape[dim])
        part = t.float().pad(widths) if t.dtype != first.dtype else t.pad(widths)
        out = part if out is None else out + part
        offset += t.shape[dim]
    return out


def stack(tensors, dim=0) -> Tensor:
    tensors = list(tensors)
    return cat([t.unsqueeze(dim) for t in tensors], dim)


def realize_all(*tensors) -> None:
    """Compute several tensors in one schedule (shared work is done once)."""
    todo = [t for t in tensors if t is not None and t.node.op != "BUFFER"]
    if not todo:
        return
    by_dev: dict = {}
    for t in todo:
        by_dev.setdefault(t.device, []).append(t)
    for dev, ts in by_dev.items():
        wanted = [t.node for t in ts]
        nodes = rz.realize(wanted, dev)
        for t, want, n in zip(ts, wanted, nodes):
            # a base tensor's storage now holds the value itself; a view's value is kept
            # under its node by the buffer registry
            if not t._view and t._storage.node is want:
                t._storage.node = n
