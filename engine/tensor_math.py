"""Tensor methods composed from the primitives (so their gradients are right by
construction), and the public in-place API built on ``Tensor._write``. A mixin of
``engine.tensor.Tensor``; it calls only Tensor methods."""
from __future__ import annotations

import math

import numpy as np

from . import ir
from .context import no_grad
from .shapes import axes_of, broadcast_shape

__all__ = ["TensorMath"]


class TensorMath:
    """Composed ops and in-place writes (mixed into Tensor)."""
    __slots__ = ()

    def _value_like(self, v):
        v = self._lift(v)       # refuses a tensor of another device
        if broadcast_shape(self.shape, v.shape) != self.shape:
            raise ir.ShapeError(f"in-place: a value of shape {v.shape} cannot be written into shape {self.shape}")
        return v._expand_to(self.shape)

    def _write_result(self, value, op):
        """An arithmetic in-place op: like torch, a float result never goes into an integer tensor."""
        if value.dtype == "float32" and self.dtype != "float32":
            raise RuntimeError(f"{op}: result type float32 can't be cast to the desired output type {self.dtype}")
        return self._write(value)

    def copy_(self, src):
        return self._write(self._value_like(src))

    def assign_(self, value):
        """Write ``value`` into this tensor's storage, outside autograd (optimizers, buffers)."""
        with no_grad():
            return self._write(self._value_like(value))

    def fill_(self, value):
        return self._write(self._lift(value).cast(self.dtype)._expand_to(self.shape))

    def zero_(self):
        return self.fill_(0)

    def add_(self, other, alpha=1):
        other = self._lift(other)
        return self._write_result(self + (other * alpha if alpha != 1 else other), "add_")

    def sub_(self, other, alpha=1):
        other = self._lift(other)
        return self._write_result(self - (other * alpha if alpha != 1 else other), "sub_")

    def mul_(self, other):
        return self._write_result(self * other, "mul_")

    def div_(self, other):
        return self._write_result(self / other, "div_")

    # clamp and masked_fill themselves are engine.ops' (bound as Tensor methods by engine/__init__)
    def clamp_(self, min=None, max=None):  # noqa: A002  (PyTorch's names)
        return self._write(self.clamp(min, max))

    def masked_fill_(self, mask, value):
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
        if isinstance(key, TensorMath) and key.dtype == "bool":
            self.masked_fill_(key, value)
            return
        view = self[key]
        if not view._view and view._storage is not self._storage:
            raise TypeError(f"unsupported index {key!r} for assignment: use ints, slices, None, ... or a bool mask")
        view._write(view._value_like(value))

    def clone(self):
        return self._make("CLONE", self.node, (self,))

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
        axes = axes_of(dim, self.ndim)
        n = math.prod(self.shape[a] for a in axes) if axes else 1
        return self.sum(dim, keepdim) * (1.0 / n)

    def var(self, dim=None, keepdim=False, unbiased=True):
        axes = axes_of(dim, self.ndim)
        n = math.prod(self.shape[a] for a in axes)
        d = self - self.mean(axes, keepdim=True)
        return (d * d).sum(dim, keepdim) * (1.0 / max(n - (1 if unbiased else 0), 1))

    def min(self, dim=None, keepdim=False):
        return -((-self)._reduce("RMAX", dim, keepdim))

    def argmax(self, dim=None, keepdim=False):
        x = self.detach()
        if dim is None:
            x, dim = x.reshape(-1), 0
        dim = dim % x.ndim
        n = x.shape[dim]
        pos = self._host(np.arange(n, dtype=np.float32)).reshape(
            tuple(n if i == dim else 1 for i in range(x.ndim)))._expand_to(x.shape)
        hit = x.eq(x._reduce("RMAX", dim, True)._expand_to(x.shape))
        return (-(-hit.where_(pos, float(n)))._reduce("RMAX", dim, keepdim)).long()

    def argmin(self, dim=None, keepdim=False):
        return (-self).argmax(dim, keepdim)

    def softmax(self, dim=-1):
        e = (self - self._reduce("RMAX", dim, True).detach()).exp()
        return e / e.sum(dim, keepdim=True)

    def log_softmax(self, dim=-1):
        z = self - self._reduce("RMAX", dim, True).detach()
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
