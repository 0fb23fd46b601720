"""The user-facing Tensor: lazy, PyTorch-shaped. Each op records one IR node and, when an
input requires grad, the op (``autograd.Ctx``) its gradient rule needs. Nothing runs until
a value is needed. Values live in storages (``engine/storage.py``); composed ops and the
public in-place API are in ``engine/tensor_math.py``, creation in ``engine/creation.py``.
"""
from __future__ import annotations

import math

import numpy as np

from . import ir, realize as rz, reduce_plan
from .autograd import Ctx, backward_pass
from .buffers import bind_buffer, buffer_of
from .context import (grad_enabled as _grad_enabled, host_rng, label, manual_seed, no_grad, random_state, scope,
                      scope_of, set_random_state)
from .lowering import compute_units
from .runtime import NP_DTYPES
from .shapes import (axes_of as _axes, broadcast_shape as _broadcast_shape, contiguous_strides,
                     shape_arg as _shape_arg)
from .storage import Storage, apply_view, unview, view_strides
from .tensor_math import TensorMath

__all__ = ["Tensor", "tensor", "empty", "zeros", "ones", "full", "arange", "rand", "randn", "zeros_like",
           "ones_like", "cat", "stack", "where", "no_grad", "manual_seed", "random_state",
           "set_random_state", "realize_all", "scope", "scope_of", "maximum", "minimum", "host_rng"]


class Tensor(TensorMath):
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
        label(node)

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

    def _host(self, array: np.ndarray) -> "Tensor":
        """A host array as a tensor on this tensor's device."""
        node = ir.buffer(array.shape, "float32" if array.dtype.kind == "f" else "int64")
        bind_buffer(node, self.device.upload(np.ascontiguousarray(array, dtype=NP_DTYPES[node.dtype])))
        return Tensor(node, self.device)

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
        label(node)
        return t

    def _broadcast(self, other) -> tuple:
        kind = type(other)
        if kind is float or kind is int or kind is bool:
            # a Python scalar becomes one constant of this shape (``_lift``'s dtype rule),
            # not a 0-d tensor expanded: the commonest operand, built on every step
            dtype = "float32" if kind is float or (kind is int and self.dtype == "bool") else self.dtype
            return self, Tensor(ir.const(other, self.shape, dtype), self.device)
        other = self._lift(other)
        shape = _broadcast_shape(self.shape, other.shape)
        return self._expand_to(shape), other._expand_to(shape)

    def _expand_to(self, shape) -> "Tensor":
        node = self.node
        if node.shape == shape:
            return self
        if node.op == "CONST":
            return Tensor(ir.const(node.arg, shape, node.dtype), self.device)
        if not (self.requires_grad and _grad_enabled()):
            # an operand nothing differentiates through: its broadcast value, without the
            # view tensors (and their strides) a user-visible expand would make
            if len(shape) > len(node.shape):
                node = ir.reshape(node, (1,) * (len(shape) - len(node.shape)) + node.shape)
            return Tensor(ir.expand(node, shape), self.device)
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
        out = self._split_reduce(op, axes)
        return out if keepdim else out.reshape(tuple(s for i, s in enumerate(out.shape) if i not in axes))

    def _split_reduce(self, op, axes):
        """The reduction in keepdim form: one REDUCE, or, where its outputs are too few to
        fill the device (``reduce_plan.split``), two: chunks of each output's elements
        first, then the partial results. Reducing along the innermost axis, a chunk is a
        contiguous run; across it, a chunk is a block of rows, so that neighbouring
        work-items still read neighbouring columns."""
        extent = math.prod(self.shape[a] for a in axes)
        inner = reduce_plan.is_inner(self.shape, axes)
        plan = reduce_plan.split(self.device.kind, compute_units(self.device), self.numel() // max(extent, 1),
                                 extent, inner)
        padded = plan.parts * plan.chunk
        if plan.parts == 1 or (padded > extent and op != "SUM" and self.dtype != "float32"):
            return Tensor._make(op, ir.reduce(op, self.node, axes), (self,), axes)
        keep = [d for d in range(self.ndim) if d not in axes]
        kept = tuple(self.shape[d] for d in keep)
        r = len(kept) if inner else 0          # where the reduced elements go, flattened
        order = keep + list(axes) if inner else list(axes) + keep
        x = self.permute(order).reshape(kept + (extent,) if inner else (extent,) + kept)
        if padded > extent:
            widths = [(0, 0)] * x.ndim
            widths[r] = (0, padded - extent)
            x = x.pad(widths)                  # zeros: a sum's identity
            if op != "SUM":                    # a max must not see them: -inf there
                valid = Tensor(ir.const(True, tuple(extent if d == r else 1 for d in range(x.ndim)), "bool"),
                               self.device).pad(widths)
                x = valid.where_(x, -math.inf)
        x = x.reshape(x.shape[:r] + (plan.parts, plan.chunk) + x.shape[r + 1:])
        part = Tensor._make(op, ir.reduce(op, x.node, (r + 1,)), (x,), (r + 1,))
        # the partial results laid out as the result with the parts along the first reduced
        # axis (a view of the first kernel's output), so the second kernel writes the
        # result's own shape and a fused epilogue reads it without a reshape in between
        a, q = axes[0], sum(1 for d in keep if d < axes[0])
        part = part.reshape(kept[:r] + (plan.parts,) + kept[r:])
        order = [d for d in range(len(kept) + 1) if d != r]
        part = part.permute(order[:q] + [r] + order[q:])
        part = part.reshape(tuple(plan.parts if i == a else 1 if i in axes else s for i, s in enumerate(self.shape)))
        return Tensor._make(op, ir.reduce(op, part.node, (a,)), (part,), (a,))

    def matmul(self, other) -> "Tensor":
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
            return a.reshape((math.prod(lead), a.shape[-1])).matmul(b).reshape(lead + (b.shape[-1],))
        batch = _broadcast_shape(a.shape[:-2], b.shape[:-2])
        a = a._expand_to(batch + a.shape[-2:])
        b = b._expand_to(batch + b.shape[-2:])
        # device-neutral: tiles, packing and split-K are chosen when lowering for a device
        return Tensor._make("MATMUL", ir.matmul(a.node, b.node), (a, b))

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


# ``engine.tensor`` stays the one import place of the tensor API; creation needs the Tensor
# class, so it comes after it.
from .creation import (arange, cat, device_rand, empty, full, maximum, minimum, ones,  # noqa: E402,F401
                       ones_like, rand, randn, stack, tensor, where, zeros, zeros_like)
