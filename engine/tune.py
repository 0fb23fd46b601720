"""Tile parameters of the contraction templates, per device kind.

PoCL rewards a work-item that owns a register block of R rows x VN columns with wide
vector loads (POCL.md). The table below is the measured default; ``bench/gemm.py
--tune`` searches around it and records the best per device in the on-disk database.
"""
from __future__ import annotations

import json
import os

__all__ = ["gemm_params", "set_device", "DEFAULT_CPU"]

DEFAULT_CPU = {"R": 6, "VN": 16}
_current: dict = dict(DEFAULT_CPU)


def set_device(device_key: str, db_path: str | None = None) -> dict:
    """Load the tuned parameters for ``device_key`` (falls back to the defaults)."""
    global _current
    _current = dict(DEFAULT_CPU)
    if db_path and os.path.exists(db_path):
        with open(db_path) as f:
            _current.update(json.load(f).get(device_key, {}).get("gemm", {}))
    return _current


def gemm_params(M: int, N: int, K: int) -> dict:
    p = dict(_current)
    # narrow outputs waste most of a 16-wide vector: use a narrower one
    while p["VN"] > 4 and N <= p["VN"] // 2:
        p["VN"] //= 2
    p["R"] = max(1, min(p["R"], M))
    return p
