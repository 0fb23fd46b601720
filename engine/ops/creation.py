"""Making tensors: eye, linspace, *_like, randint, randperm, from_numpy, as_tensor."""
from __future__ import annotations

import builtins

import numpy as np

from ..dtypes import as_dtype
from ..tensor import Tensor, full, host_rng, tensor
from .views import to

# --- creation -------------------------------------------------------------------------------------

def _shape_of(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    return tuple(builtins.int(s) for s in size)


def eye(n, m=None, dtype="float32", device=None, requires_grad=False) -> Tensor:
    m = n if m is None else m
    return tensor(np.eye(n, m), dtype=as_dtype(dtype), device=device, requires_grad=requires_grad)


def linspace(start, end, steps, dtype="float32", device=None, requires_grad=False) -> Tensor:
    # torch computes the first half from start and the second from end; float64 then
    # rounded matches it to float32 rounding
    return tensor(np.linspace(start, end, builtins.int(steps)), dtype=as_dtype(dtype), device=device,
                  requires_grad=requires_grad)


def full_like(x: Tensor, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    return full(x.shape, fill_value, as_dtype(dtype) if dtype else x.dtype, device or x.device, requires_grad)


def zeros_like(x: Tensor, dtype=None, device=None, requires_grad=False) -> Tensor:
    return full_like(x, 0, dtype, device, requires_grad)


def ones_like(x: Tensor, dtype=None, device=None, requires_grad=False) -> Tensor:
    return full_like(x, 1, dtype, device, requires_grad)


def empty_like(x: Tensor, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Like torch, the values are unspecified (here: zeros)."""
    return full_like(x, 0, dtype, device, requires_grad)


def rand_like(x: Tensor, dtype=None, device=None, requires_grad=False) -> Tensor:
    arr = host_rng().random(x.shape, dtype=np.float32)
    return tensor(arr, dtype=as_dtype(dtype or "float32"), device=device or x.device, requires_grad=requires_grad)


def randn_like(x: Tensor, dtype=None, device=None, requires_grad=False) -> Tensor:
    arr = host_rng().standard_normal(x.shape, dtype=np.float32)
    return tensor(arr, dtype=as_dtype(dtype or "float32"), device=device or x.device, requires_grad=requires_grad)


def randint(low, high=None, size=None, dtype="int64", device=None, generator=None) -> Tensor:
    """torch.randint(high, size) / randint(low, high, size): integers in [low, high)."""
    if size is None and isinstance(high, (tuple, list)):
        low, high, size = 0, low, high
    if high is None:
        low, high = 0, low
    if size is None:
        raise TypeError("randint: size is required")
    rng = generator if isinstance(generator, np.random.Generator) else host_rng()
    return tensor(rng.integers(low, high, size=tuple(size)), dtype=as_dtype(dtype), device=device)


def randperm(n, dtype="int64", device=None) -> Tensor:
    return tensor(host_rng().permutation(n), dtype=as_dtype(dtype), device=device)


def from_numpy(arr: np.ndarray, device=None) -> Tensor:
    """A tensor from a numpy array (copied to the device; float64 becomes float32)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(arr).__name__}")
    return tensor(arr, device=device)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    if isinstance(data, Tensor):
        return to(data, dtype=dtype) if dtype else data
    return tensor(data, dtype=as_dtype(dtype) if dtype else None, device=device)
