"""``engine.save`` / ``engine.load``: tensors in the safetensors format."""
from __future__ import annotations

import os

import numpy as np
from safetensors.numpy import load_file, save_file

from .files import atomic_write
from .tensor import Tensor, tensor

__all__ = ["save", "load"]


def save(state: dict, path) -> None:
    """Write name -> Tensor/ndarray to ``path`` atomically (temp file, fsync, rename)."""
    arrays = {k: np.ascontiguousarray(v.numpy() if isinstance(v, Tensor) else np.asarray(v)) for k, v in state.items()}
    path = os.fspath(path)
    atomic_write(path, writer=lambda tmp: save_file(arrays, tmp))


def load(path, device=None) -> dict:
    return {k: tensor(v, device=device) for k, v in load_file(os.fspath(path)).items()}
