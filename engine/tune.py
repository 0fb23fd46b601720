"""Tile parameters of the contraction templates, per device kind.

PoCL rewards a work-item that owns a register block of R rows x W columns of C with wide
vector loads from packed panels (POCL.md; bench/NOTES.md has the measurements behind
these defaults). ``set_device`` loads tuned values from the on-disk database.
"""
from __future__ import annotations

import json
import os

__all__ = ["gemm_tile", "set_device", "DEFAULTS"]

# kind -> (R rows, W columns) per work-item; W is a multiple of 16 (float16 vectors)
DEFAULTS = {"cpu": (8, 32), "gpu": (128, 128), "accelerator": (8, 32), "other": (8, 32)}
_tuned: dict = {}


def set_device(device_key: str, db_path: str | None = None) -> dict:
    """Load tuned tiles for ``device_key`` from the JSON database (if it has any)."""
    _tuned.clear()
    if db_path and os.path.exists(db_path):
        with open(db_path) as f:
            _tuned.update({k: tuple(v) for k, v in json.load(f).get(device_key, {}).get("gemm", {}).items()})
    return dict(_tuned)


def gemm_tile(M: int, N: int, K: int, kind: str) -> tuple:
    R, W = _tuned.get(kind) or DEFAULTS.get(kind, DEFAULTS["other"])
    if kind == "gpu":
        return R, W        # the tiled template needs whole 16 x 16 work-group tiles
    # narrow outputs would waste most of a wide tile
    if N <= 16:
        W = 16
    return (min(R, max(M, 1)) if M < R else R), W
