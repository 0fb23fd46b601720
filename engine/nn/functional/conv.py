"""Linear maps, convolutions (implicit GEMM) and pooling."""
from __future__ import annotations

import numpy as np

from ... import ir, ops
from ...tensor import Tensor, cat, tensor


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    out = x @ weight.T
    return out + bias if bias is not None else out


def _same_pads(size, k, stride, dilation):
    total = dilation * (k - 1)
    return total // 2, total - total // 2


def conv2d(x: Tensor, weight: Tensor, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    """Implicit GEMM: the im2col matrix is a view (pad + sliding window) that the GEMM
    reads through its index expression; it is never written to memory. ``padding`` may be
    an int, a pair, "valid" or "same" (stride 1); ``groups`` splits the channels (one GEMM
    per group)."""
    if x.ndim != 4 or weight.ndim != 4:
        raise ir.ShapeError(f"conv2d: input {x.shape} and weight {weight.shape} must both be 4-D (N,C,H,W)/(O,C,KH,KW)")
    n, c, h, w = x.shape
    o, cw, kh, kw = weight.shape
    if c % groups or o % groups:
        raise ValueError(f"conv2d: in_channels {c} and out_channels {o} must be divisible by groups {groups}")
    if c != cw * groups:
        raise ir.ShapeError(f"conv2d: input has {c} channels (shape {x.shape}) but weight expects {cw * groups} "
                            f"(shape {weight.shape}, groups={groups})")
    stride, dilation = _pair(stride), _pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            pads = ((0, 0), (0, 0))
        elif padding == "same":
            if stride != (1, 1):
                raise ValueError("conv2d: padding='same' is not supported for strided convolutions (like torch)")
            pads = (_same_pads(h, kh, 1, dilation[0]), _same_pads(w, kw, 1, dilation[1]))
        else:
            raise ValueError(f"conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    else:
        p = _pair(padding)
        pads = ((p[0], p[0]), (p[1], p[1]))
    if groups > 1:
        cg, og = c // groups, o // groups
        outs = [_conv2d_one(x[:, g * cg:(g + 1) * cg], weight[g * og:(g + 1) * og], stride, pads, dilation)
                for g in range(groups)]
        out = cat(outs, 1)
    else:
        out = _conv2d_one(x, weight, stride, pads, dilation)
    return out + bias.reshape(1, o, 1, 1) if bias is not None else out


def _conv2d_one(x, weight, stride, pads, dilation):
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    xp = x.pad(((0, 0), (0, 0)) + tuple(pads))
    win = xp.window((kh, kw), stride, dilation)                 # [N, C, OH, OW, KH, KW]
    oh, ow = win.shape[2], win.shape[3]
    cols = win.permute(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    # implicit GEMM: the lowering reads a window view in place (engine/lowering.py)
    out = cols.matmul(weight.reshape(o, c * kh * kw).T)   # [N*OH*OW, O]
    return out.reshape(n, oh, ow, o).permute(0, 3, 1, 2)


def conv1d(x: Tensor, weight: Tensor, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    """1-D convolution over (N, C, L) as a 2-D one of height 1."""
    if x.ndim != 3 or weight.ndim != 3:
        raise ir.ShapeError(f"conv1d: input {x.shape} and weight {weight.shape} must both be 3-D (N,C,L)/(O,C,K)")
    st, dl = _single(stride), _single(dilation)
    pd = padding if isinstance(padding, str) else (0, _single(padding))
    out = conv2d(x.unsqueeze(2), weight.unsqueeze(2), bias, (1, st), pd, (1, dl), groups)
    return out.squeeze(2)


def _single(v):
    return v if isinstance(v, int) else tuple(v)[0]


def max_pool2d(x: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False) -> Tensor:
    k = _pair(kernel_size)
    s = _pair(stride) if stride is not None else k
    p = _pair(padding)
    if ceil_mode:
        raise NotImplementedError("max_pool2d: ceil_mode=True is not supported")
    if p != (0, 0):
        widths = ((0, 0),) * (x.ndim - 2) + ((p[0], p[0]), (p[1], p[1]))
        # the mask is a host array: a padded constant-True condition trips the code generator
        inside = tensor(np.pad(np.ones(x.shape[-2:], bool), widths[-2:]), device=x.device)
        x = inside.where_(x.pad(widths), float("-inf"))
    return ops.amax(x.window(k, s, _pair(dilation)), (-2, -1))


def avg_pool2d(x: Tensor, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True) -> Tensor:
    """Average pooling; padded cells count in the average (count_include_pad=True, torch's default)."""
    if ceil_mode or not count_include_pad:
        raise NotImplementedError("avg_pool2d: ceil_mode / count_include_pad=False are not supported")
    k = _pair(kernel_size)
    s = _pair(stride) if stride is not None else k
    p = _pair(padding)
    xp = x.pad(((0, 0),) * (x.ndim - 2) + ((p[0], p[0]), (p[1], p[1])))
    return xp.window(k, s).mean(dim=(-2, -1))


def adaptive_avg_pool2d(x: Tensor, output_size) -> Tensor:
    """torch's bins (start floor(i*H/oh), end ceil((i+1)*H/oh)) as two averaging matmuls."""
    oh, ow = _pair(output_size)
    h, w = x.shape[-2], x.shape[-1]
    oh, ow = oh or h, ow or w
    if h % oh == 0 and w % ow == 0:
        return avg_pool2d(x, (h // oh, w // ow))
    ph, pw = _pool_matrix(h, oh, x.device), _pool_matrix(w, ow, x.device)
    return ph.matmul(x.matmul(pw.T))


def adaptive_avg_pool1d(x: Tensor, output_size) -> Tensor:
    L = x.shape[-1]
    return x.matmul(_pool_matrix(L, _single(output_size), x.device).T)


def _pool_matrix(n, m, device):
    p = np.zeros((m, n), np.float32)
    for i in range(m):
        a, b = (i * n) // m, -((-(i + 1) * n) // m)
        p[i, a:b] = 1.0 / (b - a)
    return tensor(p, device=device)
