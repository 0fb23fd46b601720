"""Tile parameters of the contraction templates: per-kind defaults, and the on-disk
tuning database that ``engine tune`` (engine/autotune.py) fills per device.

PoCL rewards a work-item that owns a register block of R rows x W columns of C with wide
vector loads from packed panels (POCL.md; bench/NOTES.md has the measurements behind the
CPU default); a GPU wants 128 x 128 local-memory tiles. The database is keyed by
platform, device name and driver version, so a driver update re-tunes.
"""
from __future__ import annotations

import json
import os

from .runtime import cache_dir

__all__ = ["gemm_tile", "device_key", "load_db", "save_best", "override", "DEFAULTS"]

# kind -> (R rows, W columns); W is a multiple of 16 (float16 vectors)
DEFAULTS = {"cpu": (8, 32), "gpu": (128, 128), "accelerator": (8, 32), "other": (8, 32)}
_db_cache: dict = {}
_override: list = []


def device_key(device) -> str:
    return f"{device.platform}|{device.name}|{device.driver}"


def _db_path() -> str:
    return os.path.join(cache_dir(), "tuning.json")


def load_db() -> dict:
    path = _db_path()
    if path not in _db_cache:
        try:
            with open(path) as f:
                _db_cache[path] = json.load(f)
        except (OSError, ValueError):
            _db_cache[path] = {}
    return _db_cache[path]


def save_best(device, gemm: dict, measurements: list) -> str:
    """Record the best GEMM tile for ``device`` (atomically: temp file + rename)."""
    db = dict(load_db())
    db[device_key(device)] = {"gemm": gemm, "measurements": measurements}
    path = _db_path()
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(db, f, indent=1)
    os.replace(tmp, path)
    _db_cache[path] = db
    return path


class override:
    """Force a tile while tuning: ``with override(8, 32): ...``."""

    def __init__(self, R, W):
        self.tile = (R, W)

    def __enter__(self):
        _override.append(self.tile)

    def __exit__(self, *exc):
        _override.pop()


def gemm_tile(M: int, N: int, K: int, device) -> tuple:
    kind = device.kind
    if _override:
        R, W = _override[-1]
    else:
        tuned = load_db().get(device_key(device), {}).get("gemm")
        R, W = (tuned["R"], tuned["W"]) if tuned else DEFAULTS.get(kind, DEFAULTS["other"])
    if kind == "gpu":
        if R % 16 or W % 16:
            raise ValueError(f"GPU GEMM tiles must be multiples of 16 (one 16 x 16 work-group), got {R} x {W}")
        return R, W
    if N <= 16:            # narrow outputs would waste most of a wide tile
        W = 16
    return (min(R, max(M, 1)) if M < R else R), W
