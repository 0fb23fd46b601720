"""ONNX rules for layers: MatMul, Gemm, Conv, pooling, normalization, softmax, Dropout."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..nn import functional as F
from ..tensor import full, tensor
from .values import _T, OPS, OnnxImportError, _host, op

# --- layers ------------------------------------------------------------------------------------

@op("MatMul")
def _matmul(ins, a, c):
    x, y = _T(ins[0]), _T(ins[1])
    if x.dtype != "float32" or y.dtype != "float32":
        return [x.float().matmul(y.float()).cast(x.dtype)]
    return [x.matmul(y)]


@op("Gemm")
def _gemm(ins, a, c):
    A, B = _T(ins[0]), _T(ins[1])
    if a.get("transA", 0):
        A = A.transpose(0, 1)
    if a.get("transB", 0):
        B = B.transpose(0, 1)
    y = A.matmul(B)
    alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
    if alpha != 1.0:
        y = y * alpha
    if len(ins) > 2 and ins[2] is not None:
        C = _T(ins[2])
        y = y + (C * beta if beta != 1.0 else C)
    return [y]


def _auto_pads(a, spatial, kernel, strides, dil):
    auto = a.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    nd = len(spatial)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads_b, pads_e = [], []
        for s, k, st, d in zip(spatial, kernel, strides, dil):
            out = -(-s // st)
            total = max((out - 1) * st + (k - 1) * d + 1 - s, 0)
            small, big = total // 2, total - total // 2
            pads_b.append(small if auto == "SAME_UPPER" else big)
            pads_e.append(big if auto == "SAME_UPPER" else small)
        return pads_b, pads_e
    if auto == "VALID":
        return [0] * nd, [0] * nd
    p = list(a.get("pads", [0] * (2 * nd)))
    return p[:nd], p[nd:]


@op("Conv")
def _conv(ins, a, c):
    x, w = _T(ins[0]), _T(ins[1])
    b = _T(ins[2]) if len(ins) > 2 and ins[2] is not None else None
    nd = x.ndim - 2
    if nd not in (1, 2):
        raise OnnxImportError(f"Conv: {nd}-D convolution is not supported (1-D and 2-D are)")
    kernel = list(a.get("kernel_shape") or w.shape[2:])
    strides = list(a.get("strides", [1] * nd))
    dil = list(a.get("dilations", [1] * nd))
    pb, pe = _auto_pads(a, x.shape[2:], kernel, strides, dil)
    if nd == 1:
        x, w = x.unsqueeze(2), w.unsqueeze(2)
        strides, dil, pb, pe = [1] + strides, [1] + dil, [0] + pb, [0] + pe
    x = x.pad(((0, 0), (0, 0)) + tuple(zip(pb, pe)))
    y = F.conv2d(x, w, b, tuple(strides), 0, tuple(dil), a.get("group", 1))
    return [y.squeeze(2) if nd == 1 else y]


def _pool_geometry(x, a):
    nd = x.ndim - 2
    kernel = list(a["kernel_shape"])
    strides = list(a.get("strides", [1] * nd))
    dil = list(a.get("dilations", [1] * nd))
    pb, pe = _auto_pads(a, x.shape[2:], kernel, strides, dil)
    extra = [0] * nd
    if a.get("ceil_mode", 0):
        for i, (s, k, st, d) in enumerate(zip(x.shape[2:], kernel, strides, dil)):
            span = s + pb[i] + pe[i]
            eff = (k - 1) * d + 1
            out = -(-(span - eff) // st) + 1
            if (out - 1) * st >= s + pb[i]:
                out -= 1
            extra[i] = max((out - 1) * st + eff - span, 0)
    return nd, kernel, strides, dil, pb, pe, extra


def _as2d(x, nd):
    return x.unsqueeze(2) if nd == 1 else x


@op("MaxPool")
def _maxpool(ins, a, c):
    x = _T(ins[0])
    nd, kernel, strides, dil, pb, pe, extra = _pool_geometry(x, a)
    widths = ((0, 0), (0, 0)) + tuple((b_, e_ + x_) for b_, e_, x_ in zip(pb, pe, extra))
    xp = x
    if any(w for pair in widths for w in pair):
        # the mask is a host array: a padded constant-True condition trips the code generator
        inside = tensor(np.pad(np.ones(x.shape[2:], bool), widths[2:]))
        xp = inside.where_(x.pad(widths), float("-inf") if x.dtype == "float32" else -(1 << 62))
    red = tuple(range(-nd, 0))
    win = xp.window(tuple(kernel), tuple(strides), tuple(dil))
    y = ops.amax(win, red)
    if c["nout"] == 1:
        return [y]
    # Indices: the row-major flat position in x of each window's first maximum
    outs = win.shape[2:2 + nd]
    k = ops.argmax(win.reshape(win.shape[:2 + nd] + (-1,)), -1)          # position inside the window
    coords, rem = [], k
    for i in range(nd):
        inner = int(np.prod(kernel[i + 1:]))
        ki = ops.floor_divide(rem, inner) if inner > 1 else rem
        rem = rem - ki * inner if inner > 1 else rem
        o = tensor(np.arange(outs[i], dtype=np.int64).reshape((outs[i],) + (1,) * (nd - 1 - i)))
        coords.append(o * strides[i] + ki * dil[i] - pb[i])
    order = list(range(nd))[::-1] if a.get("storage_order", 0) else list(range(nd))   # 1: column-major
    flat = None
    for i in order:
        flat = coords[i] if flat is None else flat * x.shape[2 + i] + coords[i]
    nc = tensor(np.arange(x.shape[0] * x.shape[1], dtype=np.int64).reshape((x.shape[0], x.shape[1]) + (1,) * nd))
    return [y, nc * int(np.prod(x.shape[2:])) + flat]


@op("AveragePool")
def _avgpool(ins, a, c):
    x = _T(ins[0])
    nd, kernel, strides, dil, pb, pe, extra = _pool_geometry(x, a)
    widths = ((0, 0), (0, 0)) + tuple((b_, e_ + x_) for b_, e_, x_ in zip(pb, pe, extra))
    xp = x.pad(widths)
    if a.get("count_include_pad", 0):
        ones = full(tuple(s + b_ + e_ for s, b_, e_ in zip(x.shape[2:], pb, pe)), 1.0).pad(tuple((0, x_) for x_ in extra))
    else:
        ones = full(x.shape[2:], 1.0).pad(tuple((b_, e_ + x_) for b_, e_, x_ in zip(pb, pe, extra)))
    K, S, D = tuple(kernel), tuple(strides), tuple(dil)
    red = tuple(range(-nd, 0))
    s = xp.window(K, S, D).sum(red)
    n = ones.window(K, S, D).sum(red)
    return [s / n]


@op("GlobalAveragePool")
def _gap(ins, a, c):
    x = _T(ins[0])
    return [x.mean(tuple(range(2, x.ndim)), keepdim=True)]


@op("GlobalMaxPool")
def _gmp(ins, a, c):
    x = _T(ins[0])
    return [ops.amax(x, tuple(range(2, x.ndim)), keepdim=True)]


@op("BatchNormalization")
def _bn(ins, a, c):
    x, scale, bias, mean, var = (_T(v) for v in ins[:5])
    eps = a.get("epsilon", 1e-5)
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if a.get("training_mode", 0):
        dims = (0,) + tuple(range(2, x.ndim))
        m = x.mean(dims, keepdim=True)
        v = ((x - m) * (x - m)).mean(dims, keepdim=True)
        y = (x - m) * (v + eps).sqrt().reciprocal() * scale.reshape(shape) + bias.reshape(shape)
        mom = a.get("momentum", 0.9)
        return [y, mean * mom + m.reshape(-1) * (1 - mom), var * mom + v.reshape(-1) * (1 - mom)][:c["nout"]]
    y = (x - mean.reshape(shape)) * (var.reshape(shape) + eps).sqrt().reciprocal() * scale.reshape(shape) + bias.reshape(shape)
    return [y]


@op("InstanceNormalization")
def _inorm(ins, a, c):
    x, scale, bias = (_T(v) for v in ins[:3])
    dims = tuple(range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    m = x.mean(dims, keepdim=True)
    v = ((x - m) * (x - m)).mean(dims, keepdim=True)
    return [(x - m) * (v + a.get("epsilon", 1e-5)).sqrt().reciprocal() * scale.reshape(shape) + bias.reshape(shape)]


@op("LayerNormalization")
def _ln(ins, a, c):
    x = _T(ins[0])
    ax = a.get("axis", -1) % x.ndim
    dims = tuple(range(ax, x.ndim))
    m = x.mean(dims, keepdim=True)
    d = x - m
    inv = ((d * d).mean(dims, keepdim=True) + a.get("epsilon", 1e-5)).sqrt().reciprocal()
    y = d * inv * _T(ins[1])
    if len(ins) > 2 and ins[2] is not None:
        y = y + _T(ins[2])
    return [y, m, inv][:c["nout"]]


def _softmax_like(fn):
    def rule(ins, a, c):
        x = _T(ins[0])
        if c["opset"] < 13:
            ax = a.get("axis", 1) % max(x.ndim, 1)
            flat = x.reshape(int(np.prod(x.shape[:ax])), int(np.prod(x.shape[ax:])))
            return [fn(flat, 1).reshape(x.shape)]
        return [fn(x, a.get("axis", -1))]
    return rule


OPS["Softmax"] = _softmax_like(lambda x, d: x.softmax(d))
OPS["LogSoftmax"] = _softmax_like(lambda x, d: x.log_softmax(d))


@op("Dropout")
def _dropout(ins, a, c):
    x = _T(ins[0])
    training = len(ins) > 2 and ins[2] is not None and bool(np.asarray(_host(ins[2])).item())
    ratio = float(np.asarray(_host(ins[1])).item()) if len(ins) > 1 and ins[1] is not None else a.get("ratio", 0.5)
    y = F.dropout(x, ratio, True) if training and ratio > 0 else x
    outs = [y]
    if c["nout"] > 1:
        outs.append(full(x.shape, True, "bool") if not training else y.ne(0))
    return outs
