"""ONNX rules for shapes and data movement (computed on the host when static): Shape,
Reshape, Transpose, Slice, Gather, Concat, Split, Expand, Tile, Pad."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..nn import functional as F
from ..tensor import cat, tensor
from .values import _T, OnnxImportError, _host, _ints, _is_static, _onnx, op

# --- shapes (host) -----------------------------------------------------------------------------

def _shape_of(x):
    return tuple(x.shape)


@op("Shape", np_rule=lambda ins, a, c: _shape_rule(ins, a))
def _shape(ins, a, c):
    return _shape_rule(ins, a)


def _shape_rule(ins, a):
    s = np.array(_shape_of(ins[0]), np.int64)
    start, end = a.get("start", 0), a.get("end", None)
    return [s[start:end]]


@op("Size", np_rule=lambda ins, a, c: [np.array(int(np.prod(_shape_of(ins[0]))), np.int64)])
def _size(ins, a, c):
    return [np.array(int(np.prod(_shape_of(ins[0]))), np.int64)]


def _const_rule(ins, a, c):
    _, _, nh = _onnx()
    if "value" in a:
        return [a["value"]]
    for k, dt in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                  ("value_ints", np.int64)):
        if k in a:
            return [np.array(a[k], dt)]
    raise OnnxImportError(f"Constant: unsupported attributes {sorted(a)}")


@op("Constant", np_rule=_const_rule)
def _constant(ins, a, c):
    return _const_rule(ins, a, c)


def _cos_rule(ins, a, c):
    v = a.get("value")
    shape = _ints(ins[0])
    if v is None:
        return [np.zeros(shape, np.float32)]
    return [np.full(shape, np.asarray(v).reshape(-1)[0], dtype=np.asarray(v).dtype)]


@op("ConstantOfShape", np_rule=_cos_rule)
def _cos(ins, a, c):
    return _cos_rule(ins, a, c)


@op("Range", np_rule=lambda ins, a, c: [np.arange(ins[0], ins[1], ins[2]).astype(np.asarray(ins[0]).dtype)])
def _range(ins, a, c):
    s, l, d = (np.asarray(_host(x)) for x in ins)
    return [np.arange(s, l, d).astype(s.dtype)]


def _reshape_target(shape_in, target, allowzero):
    out = []
    for i, t in enumerate(target):
        out.append(shape_in[i] if t == 0 and not allowzero else t)
    return out


@op("Reshape", np_rule=lambda ins, a, c: [np.reshape(ins[0], _reshape_target(ins[0].shape, _ints(ins[1]), a.get("allowzero", 0)))])
def _reshape(ins, a, c):
    x = _T(ins[0])
    return [x.reshape(_reshape_target(x.shape, _ints(ins[1]), a.get("allowzero", 0)))]


@op("Flatten", np_rule=lambda ins, a, c: [_flatten_np(ins[0], a.get("axis", 1))])
def _flatten(ins, a, c):
    x = _T(ins[0])
    ax = a.get("axis", 1)
    ax = ax + x.ndim if ax < 0 else ax
    return [x.reshape(int(np.prod(x.shape[:ax])), int(np.prod(x.shape[ax:])))]


def _flatten_np(x, axis):
    ax = axis + x.ndim if axis < 0 else axis
    return x.reshape(int(np.prod(x.shape[:ax])), int(np.prod(x.shape[ax:])))


@op("Transpose", np_rule=lambda ins, a, c: [np.transpose(ins[0], a.get("perm"))])
def _transpose(ins, a, c):
    x = _T(ins[0])
    perm = a.get("perm") or list(reversed(range(x.ndim)))
    return [x.permute(perm)]


def _axes_arg(ins, a, idx=1):
    if len(ins) > idx and ins[idx] is not None:
        return _ints(ins[idx])
    v = a.get("axes")
    return list(v) if v is not None else None


@op("Unsqueeze", np_rule=lambda ins, a, c: [_unsqueeze_np(ins[0], _axes_arg(ins, a))])
def _unsqueeze(ins, a, c):
    x = _T(ins[0])
    axes = _axes_arg(ins, a)
    n = x.ndim + len(axes)
    axes = sorted(ax % n for ax in axes)
    shape = list(x.shape)
    for ax in axes:
        shape.insert(ax, 1)
    return [x.reshape(tuple(shape))]


def _unsqueeze_np(x, axes):
    n = np.ndim(x) + len(axes)
    return np.expand_dims(x, tuple(sorted(ax % n for ax in axes)))


@op("Squeeze", np_rule=lambda ins, a, c: [np.squeeze(ins[0], tuple(_axes_arg(ins, a))) if _axes_arg(ins, a) else np.squeeze(ins[0])])
def _squeeze(ins, a, c):
    x = _T(ins[0])
    axes = _axes_arg(ins, a)
    if axes is None:
        return [x.reshape(tuple(s for s in x.shape if s != 1))]
    axes = {ax % x.ndim for ax in axes}
    return [x.reshape(tuple(s for i, s in enumerate(x.shape) if i not in axes))]


def _concat_np(ins, a, c):
    return [np.concatenate([np.asarray(x) for x in ins if x is not None], a["axis"])]


@op("Concat", np_rule=_concat_np)
def _concat(ins, a, c):
    ts = [_T(x) for x in ins if x is not None]
    ts = [t for t in ts if t.numel() or len(ts) == 1]
    dts = {t.dtype for t in ts}
    if len(dts) > 1:
        raise OnnxImportError(f"Concat of mixed dtypes {dts}")
    if len(ts) == 1:
        return [ts[0]]
    return [cat(ts, a["axis"]) if ts[0].dtype != "bool" else cat([t.long() for t in ts], a["axis"]).ne(0)]


def _slice_params(shape, ins, a):
    starts, ends = _ints(ins[1]), _ints(ins[2])
    axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
    steps = _ints(ins[4]) if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    key = [slice(None)] * len(shape)
    for s, e, ax, st in zip(starts, ends, axes, steps):
        ax %= len(shape)
        key[ax] = slice(*slice(s, e, st).indices(shape[ax]))
        # INT64_MAX/MIN-style bounds are handled by slice.indices' clamping
    return key


@op("Slice", np_rule=lambda ins, a, c: [np.asarray(ins[0])[tuple(_slice_params(np.shape(ins[0]), ins, a))]])
def _slice(ins, a, c):
    x = _T(ins[0])
    key = _slice_params(x.shape, ins, a)
    out = x
    pos = [k for k in key]
    neg = [d for d, k in enumerate(key) if k.step is not None and k.step < 0]
    for d in neg:
        k = key[d]
        idx = np.arange(x.shape[d])[k]
        pos[d] = slice(None)
        out = ops.index_select(out, d, tensor(idx.astype(np.int64))) if len(idx) else \
            out.shrink([(0, 0, 1) if i == d else (0, s, 1) for i, s in enumerate(out.shape)])
    if neg:
        return [out[tuple(p if i not in neg else slice(None) for i, p in enumerate(pos))]] if any(
            i not in neg and p != slice(None) for i, p in enumerate(pos)) else [out]
    return [x[tuple(key)]]


def _gather_np(ins, a, c):
    return [np.take(ins[0], np.asarray(ins[1]).astype(np.int64), axis=a.get("axis", 0))]


@op("Gather", np_rule=_gather_np)
def _gather(ins, a, c):
    x, idx = _T(ins[0]), ins[1]
    ax = a.get("axis", 0) % x.ndim
    if _is_static(idx):
        idx = np.asarray(idx).astype(np.int64)
        idx = np.where(idx < 0, idx + x.shape[ax], idx)
        if idx.ndim == 0:
            return [ops.narrow(x, ax, int(idx), 1).squeeze(ax)]
        flat = tensor(idx.reshape(-1))
        out_shape = x.shape[:ax] + idx.shape + x.shape[ax + 1:]
    else:
        flat = idx.reshape(-1).long()
        out_shape = x.shape[:ax] + idx.shape + x.shape[ax + 1:]
    sel = ops.index_select(x, ax, flat)
    return [sel.reshape(out_shape)]


@op("GatherElements")
def _gather_el(ins, a, c):
    x = _T(ins[0])
    idx = _T(ins[1]).long()
    ax = a.get("axis", 0) % x.ndim
    idx = (idx < 0).where_(idx + x.shape[ax], idx)
    return [ops.gather(x, ax, idx)]


def _split_sizes(n, ins, a, nout):
    if len(ins) > 1 and ins[1] is not None:
        return _ints(ins[1])
    if a.get("split") is not None:
        return list(a["split"])
    k = a.get("num_outputs", nout)
    size = -(-n // k)
    return [min(size, n - i * size) for i in range(k)]


@op("Split", np_rule=lambda ins, a, c: list(np.split(ins[0], np.cumsum(_split_sizes(np.shape(ins[0])[a.get("axis", 0)], ins, a, c["nout"]))[:-1], a.get("axis", 0))))
def _split(ins, a, c):
    x = _T(ins[0])
    ax = a.get("axis", 0) % x.ndim
    return list(ops.split(x, _split_sizes(x.shape[ax], ins, a, c["nout"]), ax))


def _expand_shape(xs, target):
    n = max(len(xs), len(target))
    a_ = (1,) * (n - len(xs)) + tuple(xs)
    b_ = (1,) * (n - len(target)) + tuple(target)
    return tuple(max(p, q) if 1 in (p, q) else p for p, q in zip(a_, b_))


@op("Expand", np_rule=lambda ins, a, c: [np.broadcast_to(ins[0], _expand_shape(np.shape(ins[0]), _ints(ins[1]))).copy()])
def _expand(ins, a, c):
    x = _T(ins[0])
    return [x._expand_to(_expand_shape(x.shape, _ints(ins[1])))]


@op("Tile", np_rule=lambda ins, a, c: [np.tile(ins[0], _ints(ins[1]))])
def _tile(ins, a, c):
    return [ops.tile(_T(ins[0]), _ints(ins[1]))]


@op("Pad")
def _pad(ins, a, c):
    x = _T(ins[0])
    pads = _ints(ins[1]) if len(ins) > 1 and ins[1] is not None else list(a.get("pads"))
    value = ins[2] if len(ins) > 2 and ins[2] is not None else a.get("value", 0.0)
    value = float(np.asarray(_host(value)).reshape(-1)[0]) if value is not None else 0.0
    axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(x.ndim))
    axes = [ax % x.ndim for ax in axes]
    k = len(axes)
    torch_pad = []
    for d in reversed(range(x.ndim)):
        if d in axes:
            i = axes.index(d)
            torch_pad += [pads[i], pads[i + k]]
        else:
            torch_pad += [0, 0]
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[a.get("mode", "constant")]
    return [F.pad(x, torch_pad, mode, value)]
