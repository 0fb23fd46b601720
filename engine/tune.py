"""Tile parameters of the contraction templates: per-kind defaults, and the on-disk
tuning database that ``engine tune`` (engine/autotune.py) fills per device.

PoCL rewards a work-item that owns a register block of R rows x W columns of C with wide
vector loads from packed panels: on 2 Xeon cores with AVX-512, float16 accumulators
written as plain ``acc += a * b`` reached 239-332 GFLOP/s, float8 100-145, and a scalar
loop 16-22 (bench/NOTES.md has the measurements behind the CPU default); a GPU wants
local-memory tiles of 64 x 128 or so. The database is keyed by platform, device name and driver
version, so a driver update re-tunes. It is a file users and tools can edit, so every
entry is checked before use: one that is not a valid tile for the device is ignored with
a warning (a whole file that is not a mapping, too), never used.

A GPU's tiled GEMM has more knobs than its tile (kernels/gemm_tiled.cl.mako): work per
work-item, K slice depth, vector widths, padding, double buffering, mad(). Its choice is
made per shape class (``shape_class``: large, small, narrow, short), so a device's entry holds
``gemm_variants``: {class: {"TM", "TN", knobs...}}; ``gemm_tile`` takes the class's tile
and ``gemm_variant`` its knobs. ``engine tune`` fills them from ``variant_space``.
"""
from __future__ import annotations

import functools
import itertools
import json
import math
import os
import warnings

from .files import atomic_write, cache_dir

__all__ = ["gemm_tile", "gemm_variant", "matmul_layout", "device_key", "load_db", "save_best", "save_variants",
           "override", "shape_class", "variant_problem", "variant_space", "DEFAULTS", "GPU_VARIANTS", "SHAPE_CLASSES"]

# kind -> (R rows, W columns); W is a multiple of 16 (the widest GEMM vectors, float16,
# so every narrower vector width a device may need divides it too). GPUs take their tiles
# from GPU_VARIANTS (per shape class) unless a database from before them names one.
DEFAULTS = {"cpu": (8, 32), "gpu": (128, 128), "accelerator": (8, 32), "other": (8, 32)}
MAX_R, MAX_W = 32, 256      # CPU register blocks beyond these only spill
SHAPE_CLASSES = ("large", "small", "narrow", "short")
# untuned GPUs: per shape class, the tile and the tiled GEMM's knobs (kernels/gemm_tiled.cl.mako):
# what `engine tune` found best on an H200 for a 784-4096-4096-10 MLP's training shapes
# (2026-11-28, bench/NOTES.md); 64 x 128 tiles with 16 x 8 outputs per work-item ran the
# MLP's large GEMMs fastest and a square n=4096 product at 0.95x cuBLAS. "short" (under 64
# rows) was not measured: the mirror image of "narrow".
GPU_VARIANTS = {
    "large": {"TM": 64, "TN": 128, "WM": 16, "WN": 8, "KB": 16, "LV": 4, "BLOCK": 0, "VW": 4, "PAD": 0,
              "DBUF": 1, "MAD": 0},
    "small": {"TM": 64, "TN": 64, "WM": 8, "WN": 8, "KB": 8, "LV": 4, "BLOCK": 0, "VW": 4, "PAD": 0,
              "DBUF": 1, "MAD": 0},
    "narrow": {"TM": 128, "TN": 16, "WM": 8, "WN": 1, "KB": 32, "LV": 1, "BLOCK": 0, "VW": 4, "PAD": 0,
               "DBUF": 1, "MAD": 0},
    "short": {"TM": 16, "TN": 128, "WM": 1, "WN": 8, "KB": 32, "LV": 1, "BLOCK": 0, "VW": 4, "PAD": 0,
              "DBUF": 1, "MAD": 0},
}
_KNOB_VALUES = {"TM": (16, 32, 64, 128), "TN": (16, 32, 64, 128), "WM": (1, 2, 4, 8, 16),
                "WN": (1, 2, 4, 8, 16), "KB": (4, 8, 16, 32, 64), "LV": (1, 2, 4), "BLOCK": (0, 1), "VW": (1, 2, 4),
                "PAD": (0, 1, 2, 4, 8), "DBUF": (0, 1), "MAD": (0, 1)}
LOCAL_BYTES = 48 * 1024     # static local memory every GPU we target gives one work-group
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


def shape_class(M: int, N: int, K: int, batch: int = 1) -> str:
    """Which tuned variant a GEMM of this shape takes: "narrow" when C has under 64
    columns (logits and their weight gradient), "short" when it has under 64 rows, "small"
    when the whole output has fewer than 512 x 512 elements, else "large"."""
    if N < 64 and N <= M:
        return "narrow"
    if M < 64:
        return "short"
    if M * N * max(batch, 1) < 512 * 512:
        return "small"
    return "large"


def variant_problem(v, kind="gpu") -> str | None:
    """Why ``v`` (a mapping of TM, TN and the tiled GEMM's knobs) is not a usable GPU
    variant; None if it is. The same rules as the template's, plus the work-group size
    and the local memory every targeted GPU gives."""
    if kind != "gpu":
        return "only GPUs take tiled GEMM variants"
    if not isinstance(v, dict) or set(v) != set(_KNOB_VALUES):
        return f"a variant names exactly {', '.join(_KNOB_VALUES)}, got {v!r}"
    for k, allowed in _KNOB_VALUES.items():
        if type(v[k]) is not int or v[k] not in allowed:
            return f"{k} must be one of {allowed}, got {v[k]!r}"
    TM, TN, WM, WN, LV, VW, PAD = (v[k] for k in ("TM", "TN", "WM", "WN", "LV", "VW", "PAD"))
    if TM % WM or TN % WN or WM % LV or WN % LV:
        return f"WM x WN ({WM} x {WN}) must divide the tile {TM} x {TN} and be whole LV={LV} chunks"
    if TM % VW or TN % VW or PAD % VW or PAD % LV:
        return f"the vector widths VW={VW}, LV={LV} must divide TM, TN and PAD={PAD}"
    threads = (TM // WM) * (TN // WN)
    if not 32 <= threads <= 1024:
        return f"{threads} work-items in a work-group; 32 to 1024 are allowed"
    local = local_bytes(v)
    if local > LOCAL_BYTES:
        return f"{local} bytes of local memory; at most {LOCAL_BYTES}"
    return None


_CLASS_TILES = {"large": (64, 128), "small": (32, 64, 128), "narrow": (16, 32), "short": (16, 32)}


@functools.lru_cache(maxsize=None)
def _space(cls):
    return tuple(_enumerate(cls))


def variant_space(cls: str = "large") -> list:
    """The GPU variants ``engine tune`` tries for shape class ``cls``, most promising
    first: the class's default, then the valid variants ordered by how many knobs differ
    from it, nearer work per item first (tiles, work per item and slice depth before the
    other knobs). Every entry passes variant_problem."""
    return [dict(v) for v in _space(cls)]


def _enumerate(cls: str) -> list:
    base = GPU_VARIANTS[cls]
    thin = _CLASS_TILES[cls]
    wide = (64, 128) if cls in ("narrow", "short") else thin
    rows, cols = (wide, thin) if cls == "narrow" else (thin, wide) if cls == "short" else (thin, thin)
    # the knobs, most telling first (the sort below prefers changing these)
    axes = {"TM": rows, "TN": cols, "WM": (1, 2, 4, 8, 16), "WN": (1, 2, 4, 8, 16), "KB": (8, 16, 32),
            "DBUF": (1, 0), "VW": (4, 2, 1), "LV": (4, 2, 1), "MAD": (0, 1), "BLOCK": (0, 1), "PAD": (0, 4)}
    out = [v for v in (dict(zip(axes, values)) for values in itertools.product(*axes.values()))
           if variant_problem(v) is None]
    work = math.log2(base["WM"] * base["WN"])
    out.sort(key=lambda v: (sum(v[k] != base[k] for k in axes), abs(math.log2(v["WM"] * v["WN"]) - work),
                            [v[k] != base[k] for k in reversed(axes)]))
    return out


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
    if entry is None or isinstance(entry, dict) and "gemm" not in entry and "gemm_variants" in entry:
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
    entry = db.get(device_key(device))
    db[device_key(device)] = dict(entry if isinstance(entry, dict) else {}, gemm=gemm, measurements=measurements)
    path = _db_path()
    atomic_write(path, json.dumps(db, indent=1))
    _db_cache[path] = db
    return path


def _tuned_variant(device, cls):
    """The tuned GPU variant of shape class ``cls`` for ``device``, or None (none, or not valid)."""
    entry = load_db().get(device_key(device))
    variants = entry.get("gemm_variants") if isinstance(entry, dict) else None
    if variants is None:
        return None
    v = variants.get(cls) if isinstance(variants, dict) else None
    if v is None:
        return None
    problem = variant_problem(v, device.kind)
    if problem:
        _warn((_db_path(), device_key(device), cls), f"tuning database {_db_path()}: the {cls} GEMM variant for "
                                                     f"{device_key(device)} is not usable ({problem}); ignored, "
                                                     f"defaults used")
        return None
    return dict(v)


def save_variants(device, best: dict, measurements: list) -> str:
    """Record the best GPU variant per shape class for ``device`` (atomically), beside
    whatever else its entry holds."""
    for cls, v in best.items():
        problem = variant_problem(v, device.kind) if cls in SHAPE_CLASSES else f"unknown shape class {cls!r}"
        if problem:
            raise ValueError(f"not saving the {cls} variant {v}: {problem}")
    db = dict(load_db())
    entry = db.get(device_key(device))
    entry = dict(entry) if isinstance(entry, dict) else {}
    old = entry.get("gemm_variants")
    entry["gemm_variants"] = dict(old if isinstance(old, dict) else {}, **best)
    entry["variant_measurements"] = measurements
    db[device_key(device)] = entry
    path = _db_path()
    atomic_write(path, json.dumps(db, indent=1))
    _db_cache[path] = db
    return path


class override:
    """Force a tile (and on a GPU the kernel variant) while tuning:
    ``with override(8, 32): ...``, ``with override(128, 128, variant={...}): ...``."""

    def __init__(self, R, W, variant=None):
        self.tile = (R, W, dict(variant) if variant is not None else None)

    def __enter__(self):
        _override.append(self.tile)

    def __exit__(self, *exc):
        _override.pop()


def matmul_layout(a_shape, b_shape, device) -> tuple:
    """(tile, pack_a) of a MATMUL of A [..., M, K] by B [..., K, N] on ``device``: the GEMM
    tile (gemm_tile), and whether A is packed into panels first: a CPU streams A's rows in
    place as fast as packed panels; a GPU work-group needs A contiguous along its rows for
    coalesced tile loads."""
    batch = 1
    for d in a_shape[:-2]:
        batch *= d
    return gemm_tile(a_shape[-2], b_shape[-1], a_shape[-1], device, batch), device.kind == "gpu"


def _gpu_choice(M, N, K, batch, device) -> dict:
    """TM, TN and knobs of a GPU GEMM: forced, tuned for its shape class, or the default."""
    if _override:
        R, W, v = _override[-1]
        return dict(v or {}, TM=R, TN=W)
    cls = shape_class(M, N, K, batch)
    return _tuned_variant(device, cls) or dict(GPU_VARIANTS[cls])


def _tiled_cap(device):
    # local-memory tiles no larger than the device probe found its compiler builds and runs
    return device.capabilities().get("tiled_max", 128) if hasattr(device, "capabilities") else 128


def gemm_tile(M: int, N: int, K: int, device, batch: int = 1) -> tuple:
    """The GEMM tile (rows, columns) of an M x N x K contraction (``batch`` of them) on
    ``device``: forced by override, tuned, or the per-kind default (GPUs: per shape class)."""
    kind = device.kind
    if kind == "gpu":
        if _override and (_override[-1][0] % 16 or _override[-1][1] % 16):
            raise ValueError(f"GEMM tile {_override[-1][0]} x {_override[-1][1]}: on a GPU both must be "
                             f"multiples of 16")
        if not _override and _tuned(device) and _tuned_variant(device, shape_class(M, N, K, batch)) is None:
            R, W = _tuned(device)           # a database from before per-class variants
        else:
            v = _gpu_choice(M, N, K, batch, device)
            R, W = v["TM"], v["TN"]
        cap = _tiled_cap(device)
        return min(R, cap), min(W, cap)
    if _override:          # an explicit request (engine tune, tests): only the hard rules apply
        R, W = _override[-1][:2]
        if W % 16:
            raise ValueError(f"GEMM tile {R} x {W}: W must be a multiple of 16")
    else:
        R, W = _tuned(device) or DEFAULTS.get(kind, DEFAULTS["other"])
    if N <= 16:            # narrow outputs would waste most of a wide tile
        W = 16
    return (min(R, max(M, 1)) if M < R else R), W


def gemm_variant(M: int, N: int, K: int, batch: int, device) -> dict:
    """The kernel knobs (kernels/gemm_tiled.cl.mako) of an M x N x K GEMM, ``batch`` of
    them, on ``device``, for the tile gemm_tile gives it: forced by override, tuned for its
    shape class, or the default. Empty (the template's first version) on CPUs, and where the
    chosen knobs do not fit that tile (a tile capped by the device probe)."""
    if device.kind != "gpu":
        return {}
    v = _gpu_choice(M, N, K, batch, device)
    if (v.get("TM"), v.get("TN")) != gemm_tile(M, N, K, device, batch):
        return {}
    if v and local_bytes(v) > device_local_bytes(device):
        return {}       # a device with less local memory than the GPUs we tune for (Oclgrind: 32 KB)
    return {k: x for k, x in v.items() if k not in ("TM", "TN")}


def local_bytes(v) -> int:
    """Local memory a tiled-GEMM variant's work-group declares."""
    return 4 * (v.get("DBUF", 0) + 1) * v.get("KB", 16) * (v["TM"] + v["TN"] + 2 * v.get("PAD", 0))


def device_local_bytes(device) -> int:
    """The local memory one work-group may use on ``device`` (LOCAL_BYTES where unknown)."""
    try:
        return int(device.cl_device.local_mem_size)
    except Exception:
        return LOCAL_BYTES
