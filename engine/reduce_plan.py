"""How a reduction is cut and which kernel computes it, per device kind.

Two choices, made where the device is known:

- ``split`` (``Tensor._reduce``): a reduction with too few outputs to fill the device is
  cut in two kernels: each output's reduced extent becomes ``parts`` partial results of
  ``chunk`` elements (the last chunk padded), which a second reduction combines.
- ``group_size`` (``codegen._lower_reduce``): a GPU reduces a long innermost axis with a
  work-group per output (``kernels/reduce_group.cl.mako``): neighbouring work-items read
  neighbouring addresses, then a local-memory tree; so it does a long reduction across
  rows into few outputs (the second stage of a column sum), where one work-item per
  output would leave the GPU nearly idle. Everything else is one work-item per output
  (``kernels/reduce.cl.mako``): a CPU work-item streams its contiguous row; with the
  innermost axis kept, neighbouring work-items read neighbouring columns (coalesced).

Pure: shapes and the device's kind and compute units in, numbers out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Split", "split", "group_size", "group_unroll", "plain_unroll", "is_inner", "force", "GROUP", "UNROLL"]

GROUP = 256          # work-items of a GPU reduction's work-group
UNROLL = 4           # loads a work-item has in flight per pass of the group template
SPLIT_AT = 1 << 15   # a CPU cuts only reductions at least this long: a launch costs tens of us
# per device kind: (work wanted in flight, smallest chunk) for a reduction along the
# innermost axis ("row") and across it ("column"); work is counted per compute unit in
# work-groups of GROUP (GPU rows) or work-items (the rest)
_GPU_ROW = (8, GROUP * UNROLL * 4)     # 8 groups of 256 = a full H100 SM; 16 loads a lane at least
_GPU_COLUMN = (2048, 64)               # 2048 streaming work-items per SM
GPU_FEW_OUTPUTS = 4096                 # fewer work-items than this leave a GPU idle
_CPU = (256, 1024)                     # many contiguous rows of >= 4 KiB per core
_CPU_COLUMN = 64                       # rows a CPU work-item sums across (measured: bench/NOTES.md)
PLAIN_UNROLL = {"cpu": 16, "gpu": 1}    # accumulators of the one-work-item-per-output template
_forced: list = []


@dataclass(frozen=True)
class Split:
    parts: int    # partial results per output (1: one kernel)
    chunk: int    # reduced elements per partial; parts * chunk >= extent, the rest is padding


def is_inner(shape, axes) -> bool:
    """Whether the innermost axis that is longer than 1 is reduced (rows are reduced
    along their contiguous direction), as opposed to reduced across (columns)."""
    longer = [d for d, s in enumerate(shape) if s > 1]
    return bool(longer) and longer[-1] in axes


def split(kind: str, compute_units: int, outputs: int, extent: int, inner: bool) -> Split:
    """How to cut a reduction of ``outputs`` results over ``extent`` elements each."""
    forced = _forced[-1].parts if _forced else None
    if forced is not None:
        parts = max(1, min(forced, extent))
        return _fit(extent, parts, 1)
    if kind == "gpu":
        per_cu, least = _GPU_ROW if inner else _GPU_COLUMN
    elif not inner:     # a work-item walks a column: short walks keep the rows it touches
        if extent < 16 * _CPU_COLUMN:      # in cache for its neighbours, which read the same rows
            return Split(1, extent)
        return _fit(extent, extent // _CPU_COLUMN, 16)
    else:
        if extent < SPLIT_AT:
            return Split(1, extent)
        per_cu, least = _CPU
    parts = min(-(-per_cu * max(compute_units, 1) // max(outputs, 1)), extent // least)
    if parts < (4 if kind == "gpu" and not inner else 2):     # a few column blocks: one group kernel
        return Split(1, extent)
    return _fit(extent, parts, GROUP * UNROLL if kind == "gpu" and inner else 16)


def _fit(extent, parts, align) -> Split:
    """``parts`` chunks covering ``extent``: a power-of-two chunk when one divides the
    extent (no padding, and the group template's passes come out even), else the chunk
    rounded up to ``align``."""
    chunk = -(-extent // parts)
    pow2 = 1 << (chunk - 1).bit_length()
    if extent % pow2 == 0:
        chunk = pow2
    else:
        chunk = min(-(-chunk // align) * align, extent)
    return Split(-(-extent // chunk), chunk)


def group_size(kind: str, shape, axes) -> int:
    """Work-group size of the group template for a REDUCE of ``shape`` over ``axes`` on a
    device of ``kind``, or 0 for one work-item per output."""
    extent = math.prod(shape[a] for a in axes)
    forced = _forced[-1].group if _forced else None
    if forced is not None:
        return min(forced, 1 << (extent.bit_length() - 1)) if forced and extent >= 2 else 0
    if kind != "gpu" or extent < 64 or not (is_inner(shape, axes) or math.prod(shape) // extent < GPU_FEW_OUTPUTS):
        return 0
    return min(GROUP, 1 << (extent.bit_length() - 1))


def plain_unroll(kind: str, extent: int) -> int:
    """Separate accumulators of the one-work-item-per-output template: a CPU needs several
    to hide the add latency of a float sum (no compiler reorders float adds); a GPU's
    column walks were twice as fast with one as with four (bench/NOTES.md); a short loop
    keeps one."""
    forced = _forced[-1].unroll if _forced else None
    if forced is not None:
        return forced
    unroll = PLAIN_UNROLL.get(kind, 1)
    return unroll if extent >= 4 * unroll else 1


def group_unroll() -> int:
    """Loads a work-item of the group template has in flight per pass."""
    forced = _forced[-1].unroll if _forced else None
    return UNROLL if forced is None else forced


class force:
    """Force the choices (tests, benchmarks): ``with force(group=64, parts=3): ...``;
    ``group=0`` forces one work-item per output, ``unroll`` the plain template's
    accumulators and the group template's loads per pass, ``None`` leaves a choice to
    the device.
    Lowered kernels are remembered by graph structure (``engine/plan_cache.py``), so
    plan inside the block with a fresh plan cache."""

    def __init__(self, group: int | None = None, parts: int | None = None, unroll: int | None = None):
        if group and group & (group - 1):
            raise ValueError(f"a reduction's work-group size must be a power of two, not {group}")
        self.group, self.parts, self.unroll = group, parts, unroll

    def __enter__(self):
        _forced.append(self)
        return self

    def __exit__(self, *exc):
        _forced.remove(self)
