"""Gradient transport dtypes of the ring all-reduce: what a float32 buffer looks like on
the wire, and the two conversions (narrow before a send, widen after a receive).

    float32   the buffer's own bytes (the default; the all-reduce is bit-equal to plain fp32)
    bfloat16  the high 16 bits of each float32, rounded to nearest even: float32's range,
              8 significant bits (relative rounding error at most 2^-8)
    float16   IEEE half: 11 significant bits (at most 2^-11), but a range of 6e-5..65504
              (subnormals down to 6e-8): larger magnitudes become Inf (and the step is
              refused), smaller ones lose bits, below 3e-8 all of them

Sums are always accumulated in float32; only the hops carry the narrow type.  numpy has no
bfloat16, so bfloat16 values live in uint16 arrays (their bit patterns) and travel under
the wire dtype name "bfloat16".  Conversions run over blocks small enough for the cache:
the rounding takes five numpy passes, which on whole megabyte segments would each go to
memory.
"""
from __future__ import annotations

import numpy as np

TRANSPORTS = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(np.uint16), "float16": np.dtype(np.float16)}
ALIASES = {"fp32": "float32", "f32": "float32", "bf16": "bfloat16", "fp16": "float16", "f16": "float16",
           "half": "float16"}
BLOCK = 1 << 16            # elements per conversion block: 256 KB of float32 stays in L2
_QNAN = np.uint16(0x7FC0)


def canonical(name: str) -> str:
    """'bf16' -> 'bfloat16' etc.; ValueError naming the choices for anything else."""
    key = ALIASES.get(name, name) if isinstance(name, str) else name
    if key not in TRANSPORTS:
        raise ValueError(f"unknown gradient transport {name!r}; choose one of {sorted(TRANSPORTS)} "
                         f"(or {sorted(ALIASES)})")
    return key


def wire_dtype(name: str) -> np.dtype:
    return TRANSPORTS[canonical(name)]


def _bf16_round(src: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> None:
    """Round-to-nearest-even of float32 `src` into bfloat16 bits `out` (same length; `tmp`
    uint32 scratch of that length): add 0x7FFF plus the lowest kept bit, keep the high half.
    The carry runs into the exponent as it should (the largest floats round to Inf)."""
    u = src.view(np.uint32)
    np.right_shift(u, 16, out=tmp)
    np.bitwise_and(tmp, 1, out=tmp)
    tmp += 0x7FFF
    tmp += u
    np.copyto(out, tmp.view(np.uint16)[1::2])       # little-endian: the high half is the odd one


def narrow(x: np.ndarray, name: str) -> np.ndarray:
    """A fresh array of `x` (float32, 1-D) in transport `name` (float32: a copy).  NaN stays
    NaN and +-Inf stays +-Inf, so the receiver's NaN/Inf check sees what the sender had."""
    name = canonical(name)
    if name == "float32":
        return x.copy()
    if name == "float16":
        with np.errstate(over="ignore"):   # beyond 65504 gives Inf, on purpose (the step is refused)
            return x.astype(np.float16)     # numpy rounds to nearest even
    out = np.empty(len(x), np.uint16)
    tmp = np.empty(min(len(x), BLOCK), np.uint32)
    for lo in range(0, len(x), BLOCK):
        hi = min(lo + BLOCK, len(x))
        _bf16_round(x[lo:hi], out[lo:hi], tmp[:hi - lo])
    # a NaN whose payload sits only in the low bits would round to Inf (or wrap to -0): keep it NaN
    nan = np.isnan(x)
    if nan.any():
        out[nan] = _QNAN | (out[nan] & np.uint16(0x8000))
    return out


def widen_into(w: np.ndarray, name: str, out: np.ndarray) -> None:
    """out[:] = float32 values of wire array `w` (exact: every narrow value is a float32)."""
    name = canonical(name)
    if name == "bfloat16":
        np.left_shift(w, 16, out=out.view(np.uint32), dtype=np.uint32)
    else:
        np.copyto(out, w, casting="safe")


def widen(w: np.ndarray, name: str) -> np.ndarray:
    out = np.empty(len(w), np.float32)
    widen_into(w, name, out)
    return out


def add_into(acc: np.ndarray, w: np.ndarray, name: str) -> None:
    """acc += float32(w), in float32 (the accumulation of every hop of the reduce-scatter)."""
    name = canonical(name)
    if name == "bfloat16":
        tmp = np.empty(min(len(w), BLOCK), np.float32)
        for lo in range(0, len(w), BLOCK):
            hi = min(lo + BLOCK, len(w))
            t = tmp[:hi - lo]
            widen_into(w[lo:hi], name, t)
            acc[lo:hi] += t
    else:
        np.add(acc, w, out=acc)   # float16 + float32 -> float32: numpy widens exactly, then adds


def round_trip(x: np.ndarray, name: str) -> np.ndarray:
    """float32 -> transport -> float32: the values a receiver sees."""
    return widen(narrow(x, name), name)


__all__ = ["TRANSPORTS", "canonical", "wire_dtype", "narrow", "widen", "widen_into", "add_into", "round_trip"]
