"""Tile parameters of the contraction templates: per-kind defaults, and the on-disk
tuning database that ``engine tune`` (engine/autotune.py) fills per device.

PoCL rewards a work-item that owns a register block of R rows x W columns of C with wide
vector loads from packed panels: on 2 Xeon cores with AVX-512, float16 accumulators
written as plain ``acc += a * b`` reached 239-332 GFLOP/s, float8 100-145, and a scalar
loop 16-22 (bench/NOTES.md has the measurements behind the CPU default); a GPU wants
128 x 128 local-memory tiles. The database is keyed by platform, device name and driver
version, so a driver update re-tunes. It is a file users and tools can edit, so every
entry is checked before use: one that is not a valid tile for the device is ignored with
a warning (a whole file that is not a mapping, too), never used.
"""
from __future__ import annotations

import json
import os
import warnings

from .files import atomic_write, cache_dir

__all__ = ["gemm_tile", "matmul_layout", "device_key", "load_db", "save_best", "override", "DEFAULTS"]

# kind -> (R rows, W columns); W is a multiple of 16 (the widest GEMM vectors, float16,
# so every narrower vector width a device may need divides it too)
DEFAULTS = {"cpu": (8, 32), "gpu": (128, 128), "accelerator": (8, 32), "other": (8, 32)}
MAX_R, MAX_W = 32, 256      # CPU register blocks beyond these only spill
_db_cache: dict = {}
_override: list = []
_warned: set = set()


def tile_problem(R, W, kind) -> str | None:
    """Why (R, W) is not a usable GEMM tile on a device of ``kind``; None if it is."""
    if type(R) is not int or type(W) is not int:
        return f"R and W must be integers, got {R!r} x {W!r}"
    if kind == "gpu":
        if not (16 <= R <= 256 and 16 <= W <= 256) or R % 16 or W % 16:
            return f"GPU GEMM tiles must be multiples of 16 (one 16 x 16 work-group) up to 256, got {R} x {W}"
        return None
    if not (1 <= R <= MAX_R) or not (16 <= W <= MAX_W) or W % 16:
        return (f"CPU GEMM tiles need 1 <= R <= {MAX_R} rows and W a multiple of 16 (the vector width) "
                f"up to {MAX_W} columns, got {R} x {W}")
    return None


def device_key(device) -> str:
    """The tuning database's key of ``device``: its identity (platform, device, driver)."""
    return device.identity


def _db_path() -> str:
    return os.path.join(cache_dir(), "tuning.json")


def _warn(key, message):
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def load_db() -> dict:
    """The tuning database as a mapping (empty, with a warning, if the file is not one)."""
    path = _db_path()
    if path not in _db_cache:
        db = {}
        try:
            with open(path) as f:
                db = json.load(f)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            _warn((path, "unreadable"), f"tuning database {path} is unreadable ({exc}); ignored, defaults used")
        if not isinstance(db, dict):
            _warn((path, "type"), f"tuning database {path} holds a {type(db).__name__}, not a mapping of "
                                  f"devices; ignored, defaults used (`engine tune` writes a new one)")
            db = {}
        _db_cache[path] = db
    return _db_cache[path]


def _tuned(device):
    """The tuned (R, W) for ``device``, or None when there is none or it is not valid."""
    entry = load_db().get(device_key(device))
    if entry is None:
        return None
    gemm = entry.get("gemm") if isinstance(entry, dict) else None
    if not isinstance(gemm, dict) or "R" not in gemm or "W" not in gemm:
        _warn((_db_path(), device_key(device)), f"tuning database {_db_path()}: the entry for {device_key(device)} "
                                                f"has no gemm tile {{'R': rows, 'W': columns}}; ignored, defaults used")
        return None
    problem = tile_problem(gemm["R"], gemm["W"], device.kind)
    if problem:
        _warn((_db_path(), device_key(device)), f"tuning database {_db_path()}: the entry for {device_key(device)} "
                                                f"is not a usable tile ({problem}); ignored, defaults used")
        return None
    return gemm["R"], gemm["W"]


def save_best(device, gemm: dict, measurements: list) -> str:
    """Record the best GEMM tile for ``device`` (atomically: temp file + rename)."""
    problem = tile_problem(gemm.get("R"), gemm.get("W"), device.kind)
    if problem:
        raise ValueError(f"not saving tile {gemm}: {problem}")
    db = dict(load_db())
    db[device_key(device)] = {"gemm": gemm, "measurements": measurements}
    path = _db_path()
    atomic_write(path, json.dumps(db, indent=1))
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


def matmul_layout(a_shape, b_shape, device) -> tuple:
    """(tile, pack_a) of a MATMUL of A [..., M, K] by B [..., K, N] on ``device``: the GEMM
    tile (gemm_tile), and whether A is packed into panels first: a CPU streams A's rows in
    place as fast as packed panels; a GPU work-group needs A contiguous along its rows for
    coalesced tile loads."""
    return gemm_tile(a_shape[-2], b_shape[-1], a_shape[-1], device), device.kind == "gpu"


def gemm_tile(M: int, N: int, K: int, device) -> tuple:
    kind = device.kind
    if _override:          # an explicit request (engine tune, tests): only the hard rules apply
        R, W = _override[-1]
        if kind == "gpu" and (R % 16 or W % 16) or kind != "gpu" and W % 16:
            raise ValueError(f"GEMM tile {R} x {W}: W (and on a GPU R) must be a multiple of 16")
    else:
        R, W = _tuned(device) or DEFAULTS.get(kind, DEFAULTS["other"])
    if kind == "gpu":
        # local-memory tiles no larger than the device probe found its compiler builds and runs
        cap = device.capabilities().get("tiled_max", 128) if hasattr(device, "capabilities") else 128
        return min(R, cap), min(W, cap)
    if N <= 16:            # narrow outputs would waste most of a wide tile
        W = 16
    return (min(R, max(M, 1)) if M < R else R), W
