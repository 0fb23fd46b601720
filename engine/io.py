"""``engine.save`` / ``engine.load``: checkpoints in the safetensors format.

What ``torch.save`` users write works: a flat ``{name: tensor}`` state dict, or a nested
dict holding state dicts beside plain metadata (``{"epoch": 3, "model": model.state_dict(),
"optimizer": opt.state_dict(), "config": {...}}``). Tensors and arrays go into the
safetensors file under their path (``model/fc1.weight``); everything else (numbers,
strings, bools, None, lists and dicts of them) goes into its JSON metadata. Nothing is
pickled, so loading a file never runs code.
"""
from __future__ import annotations

import json
import os

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from .files import atomic_write
from .tensor import Tensor, tensor

__all__ = ["save", "load"]

_META_KEY = "many_as_one.tree"
_SEP = "/"


def save(state: dict, path) -> None:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename)."""
    if not isinstance(state, dict):
        raise TypeError(f"save: expected a dict, got {type(state).__name__}")
    arrays: dict = {}
    tree = _split(state, (), arrays)
    path = os.fspath(path)
    meta = {_META_KEY: json.dumps(tree)}
    atomic_write(path, writer=lambda tmp: save_file(arrays, tmp, metadata=meta))


def load(path, device=None) -> dict:
    """The dict ``save`` wrote, tensors on ``device`` (a file from another safetensors
    writer loads as its flat name -> tensor dict)."""
    with safe_open(os.fspath(path), framework="numpy") as f:
        meta = f.metadata() or {}
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    if _META_KEY not in meta:
        return {k: tensor(v, device=device) for k, v in arrays.items()}
    return _join(json.loads(meta[_META_KEY]), arrays, device)


def _split(value, where, arrays):
    """The JSON-able skeleton of ``value``; tensors and arrays move into ``arrays``."""
    if isinstance(value, (Tensor, np.ndarray)):
        name = base = _SEP.join(where)
        n = 1
        while name in arrays:      # keys may hold the separator themselves: stay unique
            name, n = f"{base}#{n}", n + 1
        arrays[name] = np.asarray(value.numpy() if isinstance(value, Tensor) else value, order="C")  # 0-d stays 0-d
        return {"$tensor": name}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = str(k)
            out[key] = _split(v, where + (key,), arrays)
        return {"$dict": out, "$int_keys": [str(k) for k in value if isinstance(k, int)]}
    if isinstance(value, (list, tuple)):
        return {"$list": [_split(v, where + (str(i),), arrays) for i, v in enumerate(value)],
                "$tuple": isinstance(value, tuple)}
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"save: cannot store {type(value).__name__} at {_SEP.join(where) or 'the top'} "
                    "(tensors, arrays, numbers, strings, bools, None, lists and dicts only; nothing is pickled)")


def _join(node, arrays, device):
    if isinstance(node, dict) and "$tensor" in node:
        return tensor(arrays[node["$tensor"]], device=device)
    if isinstance(node, dict) and "$dict" in node:
        ints = set(node.get("$int_keys", []))
        return {(int(k) if k in ints else k): _join(v, arrays, device) for k, v in node["$dict"].items()}
    if isinstance(node, dict) and "$list" in node:
        items = [_join(v, arrays, device) for v in node["$list"]]
        return tuple(items) if node.get("$tuple") else items
    return node
