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
the wire dtype name "bfloat16".  Conversions run over blocks small enough for the cache
(the rounding takes five numpy passes, which on whole megabyte segments would each go to
memory), and large arrays are cut into hostpool's fixed pieces and converted on its few
threads (numpy releases the GIL): one thread converts only ~3 GB/s of float32, less than a
loopback link carries.  Every conversion is element-wise, so the split changes no bit.
"""
from __future__ import annotations

import numpy as np

from . import hostpool

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


def _narrow_piece(pair, name: str) -> None:
    x, out = pair
    if name == "float16":
        with np.errstate(over="ignore"):   # beyond 65504 gives Inf, on purpose (the step is refused)
            np.copyto(out, x, casting="same_kind")   # numpy rounds to nearest even
        return
    tmp = np.empty(min(len(x), BLOCK), np.uint32)
    for lo in range(0, len(x), BLOCK):
        hi = min(lo + BLOCK, len(x))
        _bf16_round(x[lo:hi], out[lo:hi], tmp[:hi - lo])
    # a NaN whose payload sits only in the low bits would round to Inf (or wrap to -0): keep it
    # NaN.  A finite sum means no NaN, and costs a third of an isnan pass.
    with np.errstate(invalid="ignore", over="ignore"):   # inf - inf, or a sum of huge values
        suspect = not np.isfinite(x.sum())
    if suspect:
        nan = np.isnan(x)
        out[nan] = _QNAN | (out[nan] & np.uint16(0x8000))


def narrow(x: np.ndarray, name: str) -> np.ndarray:
    """A fresh array of `x` (float32, 1-D, contiguous) in transport `name` (float32: a copy).
    NaN stays NaN and +-Inf stays +-Inf, so the receiver's NaN/Inf check sees what the
    sender had."""
    name = canonical(name)
    if name == "float32":
        return x.copy()
    out = np.empty(len(x), TRANSPORTS[name])
    hostpool.run(lambda pair: _narrow_piece(pair, name), hostpool.split(x, out))
    return out


def _widen_piece(pair, name: str) -> None:
    w, out = pair
    if name == "bfloat16":
        np.left_shift(w, 16, out=out.view(np.uint32), dtype=np.uint32)
    else:
        np.copyto(out, w, casting="safe")


def widen_into(w: np.ndarray, name: str, out: np.ndarray) -> None:
    """out[:] = float32 values of wire array `w` (exact: every narrow value is a float32)."""
    name = canonical(name)
    hostpool.run(lambda pair: _widen_piece(pair, name), hostpool.split(w, out))


def widen(w: np.ndarray, name: str) -> np.ndarray:
    out = np.empty(len(w), np.float32)
    widen_into(w, name, out)
    return out


def _add_piece(pair, name: str) -> None:
    acc, w = pair
    if name != "bfloat16":
        np.add(acc, w, out=acc)   # float16 (or float32) + float32 -> float32: widened exactly, then added
        return
    tmp = np.empty(min(len(w), BLOCK), np.float32)
    for lo in range(0, len(w), BLOCK):
        hi = min(lo + BLOCK, len(w))
        t = tmp[:hi - lo]
        _widen_piece((w[lo:hi], t), name)
        acc[lo:hi] += t


def add_into(acc: np.ndarray, w: np.ndarray, name: str) -> None:
    """acc += float32(w), in float32 (the accumulation of every hop of the reduce-scatter)."""
    name = canonical(name)
    hostpool.run(lambda pair: _add_piece(pair, name), hostpool.split(acc, w))


def round_trip(x: np.ndarray, name: str) -> np.ndarray:
    """float32 -> transport -> float32: the values a receiver sees."""
    return widen(narrow(x, name), name)


__all__ = ["TRANSPORTS", "canonical", "wire_dtype", "narrow", "widen", "widen_into", "add_into", "round_trip"]
