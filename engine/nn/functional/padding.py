"""Padding (constant, reflect, replicate, circular) and resizing (interpolate)."""
from __future__ import annotations

import math

import numpy as np

from ... import ops
from ...tensor import Tensor, cat, tensor


def pad(x: Tensor, pad, mode="constant", value=0.0) -> Tensor:  # noqa: A002
    """torch.nn.functional.pad: ``pad`` pairs from the last dim backwards; negative widths
    crop; modes constant, reflect, replicate, circular."""
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: pad {pad} must have an even length of at most 2 * {x.ndim}")
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (int(pad[2 * i]), int(pad[2 * i + 1]))
    # crop first (negative widths)
    bounds = [(max(-a, 0), s - max(-b, 0), 1) for (a, b), s in zip(widths, x.shape)]
    x = x.shrink(bounds)
    widths = [(max(a, 0), max(b, 0)) for a, b in widths]
    if mode == "constant":
        out = x.pad(widths)
        if value and any(w for pair in widths for w in pair):
            inside = tensor(np.pad(np.ones(x.shape, bool), widths), device=x.device)
            out = inside.where_(out, value)
        return out
    for d, (a, b) in enumerate(widths):
        if not a and not b:
            continue
        n = x.shape[d]
        parts = []
        if mode == "replicate":
            parts = [ops.narrow(x, d, 0, 1)._expand_to(_with(x.shape, d, a))] if a else []
            parts += [x] + ([ops.narrow(x, d, n - 1, 1)._expand_to(_with(x.shape, d, b))] if b else [])
        elif mode == "reflect":
            if a >= n or b >= n:
                raise ValueError(f"pad: reflect padding ({a}, {b}) must be smaller than the dim size {n}")
            parts = ([ops.flip(ops.narrow(x, d, 1, a), d)] if a else []) + [x] + \
                ([ops.flip(ops.narrow(x, d, n - 1 - b, b), d)] if b else [])
        elif mode == "circular":
            parts = ([ops.narrow(x, d, n - a, a)] if a else []) + [x] + ([ops.narrow(x, d, 0, b)] if b else [])
        else:
            raise ValueError(f"pad: mode must be constant, reflect, replicate or circular, got {mode!r}")
        x = cat(parts, d)
    return x


def _with(shape, d, n):
    return tuple(n if i == d else s for i, s in enumerate(shape))


def interpolate(x: Tensor, size=None, scale_factor=None, mode="nearest", align_corners=None) -> Tensor:
    """Resize the spatial dims (all but N and C). mode "nearest" (torch's: source index
    floor(i * in / out)); integer up-scales are a broadcast, others an index selection."""
    if mode != "nearest":
        raise NotImplementedError(f"interpolate: mode {mode!r} is not supported (only 'nearest')")
    nd = x.ndim - 2
    if size is not None:
        out = (size,) * nd if isinstance(size, int) else tuple(size)
        scales = [None] * nd
    elif scale_factor is not None:
        sf = (scale_factor,) * nd if isinstance(scale_factor, (int, float)) else tuple(scale_factor)
        out = tuple(int(math.floor(s * f)) for s, f in zip(x.shape[2:], sf))
        scales = list(sf)
    else:
        raise ValueError("interpolate: either size or scale_factor must be given")
    for i in range(nd):
        d = 2 + i
        n, m = x.shape[d], out[i]
        if m == n:
            continue
        if m % n == 0 and (scales[i] is None or float(scales[i]) == m // n):
            x = ops.repeat_interleave(x, m // n, d)
            continue
        scale = (1.0 / scales[i]) if scales[i] is not None else n / m
        idx = np.minimum(np.floor(np.arange(m, dtype=np.float32) * np.float32(scale)).astype(np.int64), n - 1)
        x = ops.index_select(x, d, tensor(idx, device=x.device))
    return x
