"""Making tensors: from host data, constants, ranges and random numbers; joining them."""
from __future__ import annotations

import numpy as np

from . import ir
from .buffers import bind_buffer, note_range
from .context import host_rng
from .runtime import NP_DTYPES, get_device
from .shapes import shape_arg
from .tensor import Tensor

__all__ = ["tensor", "empty", "zeros", "ones", "full", "arange", "rand", "randn", "zeros_like", "ones_like",
           "device_rand", "where", "maximum", "minimum", "cat", "stack", "infer_dtype"]


def infer_dtype(arr: np.ndarray) -> str:
    if arr.dtype == np.bool_:
        return "bool"
    if np.issubdtype(arr.dtype, np.floating):
        return "float32"
    if arr.dtype == np.int32:
        return "int32"
    if np.issubdtype(arr.dtype, np.integer):
        return "int64"
    raise TypeError(f"unsupported dtype {arr.dtype}")


def tensor(data, dtype=None, device=None, requires_grad=False) -> Tensor:
    dev = get_device(device)
    if isinstance(data, Tensor):
        data = data.numpy()
    arr = np.asarray(data)
    dt = dtype or infer_dtype(arr)
    if dt not in NP_DTYPES:
        raise TypeError(f"unsupported dtype {dt!r}; supported: {list(NP_DTYPES)}")
    arr = np.asarray(arr, dtype=NP_DTYPES[dt], order="C")   # keeps a 0-d array 0-d
    node = ir.buffer(arr.shape, dt)
    bind_buffer(node, dev.upload(arr))
    if arr.dtype.kind == "i" and arr.size:
        # class indices: the loss checks them against C with no download (nn.functional.loss)
        note_range(node, (int(arr.min()), int(arr.max())))
    return Tensor(node, dev, requires_grad=requires_grad)


def empty(shape, dtype="float32", device=None) -> Tensor:
    """A tensor backed by a fresh, uninitialised device buffer."""
    dev = get_device(device)
    node = ir.buffer(shape_arg(shape if isinstance(shape, tuple) else (shape,)), dtype)
    bind_buffer(node, dev.alloc(node.nbytes))
    return Tensor(node, dev)


def full(shape, value, dtype="float32", device=None, requires_grad=False) -> Tensor:
    shape = shape_arg(shape if isinstance(shape, tuple) else (shape,))
    t = Tensor(ir.const(value, shape, dtype), get_device(device), requires_grad=requires_grad)
    return t.realize() if requires_grad else t


def zeros(*shape, dtype="float32", device=None, requires_grad=False) -> Tensor:
    return full(shape_arg(shape), 0, dtype, device, requires_grad)


def ones(*shape, dtype="float32", device=None, requires_grad=False) -> Tensor:
    return full(shape_arg(shape), 1, dtype, device, requires_grad)


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
    return tensor(host_rng().random(shape_arg(shape), dtype=np.float32), device=device, requires_grad=requires_grad)


def randn(*shape, device=None, requires_grad=False) -> Tensor:
    return tensor(host_rng().standard_normal(shape_arg(shape), dtype=np.float32), device=device, requires_grad=requires_grad)


def device_rand(shape, device) -> Tensor:
    """Uniform [0, 1) generated on the device (dropout masks); seeded from the engine RNG."""
    seed = int(host_rng().integers(0, 2**31 - 1))
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
