"""Stateless layers, composed from Tensor ops (so their gradients come for free)."""
from __future__ import annotations

import math

import numpy as np

from .. import ir, ops
from .. import realize as _rz
from ..tensor import Tensor, arange, cat, device_rand, full, tensor

__all__ = ["linear", "conv1d", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_avg_pool1d",
           "relu", "relu6", "gelu", "sigmoid", "tanh", "silu", "mish", "softplus", "leaky_relu", "elu", "hardtanh",
           "hardsigmoid", "hardswish", "logsigmoid", "softmax", "log_softmax", "cross_entropy", "nll_loss",
           "binary_cross_entropy", "binary_cross_entropy_with_logits", "mse_loss", "l1_loss", "smooth_l1_loss",
           "huber_loss", "kl_div", "cosine_similarity", "layer_norm", "batch_norm", "dropout", "one_hot",
           "embedding", "scaled_dot_product_attention", "pad", "interpolate", "normalize",
           "multi_head_attention_forward"]


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
    out = cols.matmul(weight.reshape(o, c * kh * kw).T, _pack_a=False)   # [N*OH*OW, O]
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


def relu(x):
    return x.relu()


def gelu(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1.0 + ((x + 0.044715 * x * x * x) * math.sqrt(2.0 / math.pi)).tanh())
    if approximate != "none":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return x.gelu()


def silu(x):
    return x * x.sigmoid()


def softplus(x, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (like torch)."""
    bx = x * beta if beta != 1 else x
    safe = bx.minimum(threshold)              # the unused branch never overflows (no NaN gradient)
    soft = (safe.exp() + 1.0).log() * (1.0 / beta)
    return (bx > threshold).where_(x, soft)


def mish(x):
    return x * softplus(x).tanh()


def leaky_relu(x, negative_slope=0.01):
    return (x > 0).where_(x, x * negative_slope)


def elu(x, alpha=1.0):
    return (x > 0).where_(x, (x.minimum(0.0).exp() - 1.0) * alpha)


def hardtanh(x, min_val=-1.0, max_val=1.0):
    return ops.clamp(x, min_val, max_val)


def relu6(x):
    return ops.clamp(x, 0.0, 6.0)


def hardsigmoid(x):
    return ops.clamp(x * (1.0 / 6.0) + 0.5, 0.0, 1.0)


def hardswish(x):
    return x * hardsigmoid(x)


def logsigmoid(x):
    return -((-x.abs()).exp() + 1.0).log() - (-x).relu()


def normalize(x: Tensor, p=2.0, dim=1, eps=1e-12) -> Tensor:
    """x / max(||x||_p over dim, eps)."""
    return x / ops.norm(x, p, dim, keepdim=True).maximum(eps)


def cosine_similarity(a: Tensor, b: Tensor, dim=1, eps=1e-8) -> Tensor:
    na = (a * a).sum(dim).sqrt().maximum(eps)
    nb = (b * b).sum(dim).sqrt().maximum(eps)
    return (a * b).sum(dim) / (na * nb)


def sigmoid(x):
    return x.sigmoid()


def tanh(x):
    return x.tanh()


def softmax(x, dim=-1):
    return x.softmax(dim)


def log_softmax(x, dim=-1):
    return x.log_softmax(dim)


def one_hot(target: Tensor, num_classes: int = -1) -> Tensor:
    """One-hot rows. Like torch (whose result is int64) the classes are exact; this one is
    float32 so it can be multiplied straight into a matmul."""
    if num_classes < 0:
        num_classes = int(target.numpy().max()) + 1
    classes = arange(num_classes, device=target.device, dtype=target.dtype)
    return target.unsqueeze(-1).eq(classes).float()


def embedding(input: Tensor, weight: Tensor, padding_idx=None, max_norm=None) -> Tensor:  # noqa: A002
    """Rows of ``weight`` picked by the integer ``input``: a one-hot matmul (O(numel(input)
    * num_embeddings * dim); the gradient lands on the picked rows, summed for repeats).
    The ``padding_idx`` row gets no gradient."""
    if max_norm is not None:
        raise NotImplementedError("embedding: max_norm is not supported")
    if input.dtype not in ("int32", "int64"):
        raise TypeError(f"embedding: indices must be an integer tensor, got {input.dtype}")
    v, d = weight.shape
    _check_targets(input, v, None, "embedding")
    hot = input.reshape(-1).unsqueeze(-1).eq(arange(v, device=input.device, dtype=input.dtype)).float()  # [M, V]
    if padding_idx is not None:
        pad = padding_idx % v
        keep = arange(v, device=input.device).ne(pad).float()
        out = (hot * keep).matmul(weight) + (hot * (1.0 - keep)).matmul(weight.detach())
    else:
        out = hot.matmul(weight)
    return out.reshape(input.shape + (d,))


def _reduce(loss: Tensor, reduction: str, what: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{what}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def mse_loss(a: Tensor, b, reduction="mean") -> Tensor:
    d = a - b
    return _reduce(d * d, reduction, "mse_loss")


def l1_loss(a: Tensor, b, reduction="mean") -> Tensor:
    return _reduce((a - b).abs(), reduction, "l1_loss")


def smooth_l1_loss(a: Tensor, b, reduction="mean", beta=1.0) -> Tensor:
    d = (a - b).abs()
    if beta == 0:
        return _reduce(d, reduction, "smooth_l1_loss")
    return _reduce((d < beta).where_(d * d * (0.5 / beta), d - 0.5 * beta), reduction, "smooth_l1_loss")


def huber_loss(a: Tensor, b, reduction="mean", delta=1.0) -> Tensor:
    d = (a - b).abs()
    return _reduce((d < delta).where_(d * d * 0.5, (d - 0.5 * delta) * delta), reduction, "huber_loss")


def kl_div(input: Tensor, target: Tensor, reduction="mean", log_target=False) -> Tensor:  # noqa: A002
    """KL divergence with ``input`` as log-probabilities (torch's convention)."""
    if log_target:
        loss = target.exp() * (target - input)
    else:
        loss = (target > 0).where_(target * (target.maximum(1e-45).log() - input), 0.0)
    if reduction == "batchmean":
        return loss.sum() * (1.0 / input.shape[0])
    return _reduce(loss, reduction, "kl_div")


def _check_targets(target: Tensor, n_classes: int, ignore_index, what: str):
    """Class targets outside [0, C) (other than ignore_index) raise, like PyTorch; in a
    compiled step the check is repeated at every replay."""
    def check():
        arr = target.numpy()
        bad = (arr < 0) | (arr >= n_classes)
        if ignore_index is not None:
            bad &= arr != ignore_index
        if bad.any():
            v = int(arr[bad].flat[0])
            if what == "embedding":
                raise IndexError(f"embedding: index {v} is out of range for an embedding of {n_classes} rows")
            raise IndexError(f"{what}: target {v} is out of bounds: targets must be class indices in "
                             f"[0, {n_classes}) (C = {n_classes}) or ignore_index ({ignore_index})")
    record = getattr(_rz, "record_host_action", None)
    record(check) if record is not None else check()


def _class_last(logits: Tensor, target: Tensor, what: str):
    """(N, C) / (N, C, d1, ...) logits and (N,) / (N, d1, ...) targets -> [M, C] and [M]."""
    if logits.ndim == 1:
        logits = logits.unsqueeze(0)
        target = target.reshape(1) if target.ndim == 0 else target
    if logits.ndim > 2:
        c = logits.shape[1]
        if target.shape != (logits.shape[0],) + logits.shape[2:]:
            raise ir.ShapeError(f"{what}: target {target.shape} does not fit logits {logits.shape} "
                                f"(expected {(logits.shape[0],) + logits.shape[2:]})")
        order = (0,) + tuple(range(2, logits.ndim)) + (1,)
        return logits.permute(order).reshape(-1, c), target.reshape(-1)
    if target.shape != (logits.shape[0],):
        raise ir.ShapeError(f"{what}: logits {logits.shape} must be [N, C] and target {target.shape} [N]")
    return logits, target


def nll_loss(log_probs: Tensor, target: Tensor, weight=None, ignore_index=-100, reduction="mean") -> Tensor:
    return _nll(log_probs, target, weight, ignore_index, reduction, 0.0, "nll_loss")


def _nll(logp, target, weight, ignore_index, reduction, label_smoothing, what):
    shape_none = None
    if target.dtype not in ("int32", "int64"):
        raise TypeError(f"{what}: target must be integer class indices, got {target.dtype}")
    if logp.ndim > 1:
        shape_none = (logp.shape[0],) + logp.shape[2:]
    lp, y = _class_last(logp, target, what)
    c = lp.shape[1]
    _check_targets(y, c, ignore_index, what)
    onehot = ops.logical_and(y.unsqueeze(-1).eq(arange(c, device=y.device, dtype=y.dtype)),
                             y.ne(ignore_index).unsqueeze(-1))                  # [M, C]; all False when ignored
    valid = y.ne(ignore_index).float()
    w = weight if weight is not None else None
    picked = onehot.where_(lp * w if w is not None else lp, 0.0).sum(1)          # w[y] * logp[y]
    wy = onehot.where_(w, 0.0).sum(1) if w is not None else valid
    loss = -picked
    if label_smoothing:
        smooth = -((lp * w) if w is not None else lp).sum(1) * valid
        loss = loss * (1.0 - label_smoothing) + smooth * (label_smoothing / c)
    if reduction == "none":
        return loss.reshape(shape_none) if shape_none and len(shape_none) > 1 else loss
    if reduction == "sum":
        return loss.sum()
    if reduction != "mean":
        raise ValueError(f"{what}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return loss.sum() / wy.sum()


def cross_entropy(logits: Tensor, target: Tensor, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0) -> Tensor:
    """torch.nn.functional.cross_entropy: (N, C) or (N, C, d1, ...) logits; class-index
    targets (outside [0, C) raises, except ``ignore_index``) or class probabilities of the
    logits' shape; per-class ``weight``; ``label_smoothing``."""
    if target.dtype == "float32" and target.shape == logits.shape:
        c = logits.shape[1] if logits.ndim > 1 else logits.shape[0]
        lp = logits.log_softmax(1 if logits.ndim > 1 else 0)
        p = target * (1.0 - label_smoothing) + label_smoothing / c if label_smoothing else target
        if weight is not None:
            lp = lp * weight.reshape((c,) + (1,) * (logits.ndim - 2)) if logits.ndim > 1 else lp * weight
        loss = -(p * lp).sum(1 if logits.ndim > 1 else 0)
        if reduction == "mean":
            return loss.sum() * (1.0 / (loss.numel() if logits.ndim > 1 else 1))
        return _reduce(loss, reduction, "cross_entropy")
    return _nll(logits.log_softmax(1 if logits.ndim > 1 else 0), target, weight, ignore_index, reduction,
                label_smoothing, "cross_entropy")


def binary_cross_entropy(p: Tensor, target: Tensor, weight=None, reduction="mean") -> Tensor:
    """-(y log p + (1 - y) log(1 - p)), each log clamped at -100 like torch."""
    if p.shape != target.shape:
        raise ValueError(f"binary_cross_entropy: target size {target.shape} differs from input size {p.shape}")
    lp = p.log().maximum(-100.0)
    l1p = (1.0 - p).log().maximum(-100.0)
    loss = -(target * lp + (1.0 - target) * l1p)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy")


def binary_cross_entropy_with_logits(x: Tensor, target: Tensor, weight=None, reduction="mean",
                                     pos_weight=None) -> Tensor:
    """Numerically stable BCE on logits: log(1 + exp(-|x|)) + max(-x, 0) form."""
    if x.shape != target.shape:
        raise ValueError(f"binary_cross_entropy_with_logits: target size {target.shape} differs from input size {x.shape}")
    log_sig_neg = (-x.abs()).exp().__add__(1.0).log() + (-x).relu()     # -log(sigmoid(x))
    if pos_weight is not None:
        lw = (pos_weight - 1.0) * target + 1.0
        loss = (1.0 - target) * x + lw * log_sig_neg
    else:
        loss = (1.0 - target) * x + log_sig_neg
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


def layer_norm(x: Tensor, normalized_shape, weight=None, bias=None, eps=1e-5) -> Tensor:
    normalized_shape = _pair(normalized_shape) if not isinstance(normalized_shape, int) else (normalized_shape,)
    dims = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    mean = x.mean(dims, keepdim=True)
    d = x - mean
    var = (d * d).mean(dims, keepdim=True)
    out = d * (var + eps).sqrt().reciprocal()
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def batch_norm(x: Tensor, running_mean, running_var, weight=None, bias=None, training=True,
               momentum=0.1, eps=1e-5) -> Tensor:
    dims = (0,) + tuple(range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if training:
        mean = x.mean(dims, keepdim=True)
        d = x - mean
        var = (d * d).mean(dims, keepdim=True)
        if running_mean is not None:
            n = x.numel() // x.shape[1]
            running_mean.assign_(running_mean * (1 - momentum) + mean.detach().reshape(-1) * momentum)
            running_var.assign_(running_var * (1 - momentum) + var.detach().reshape(-1) * (momentum * n / max(n - 1, 1)))
    else:
        mean, var = running_mean.reshape(shape), running_var.reshape(shape)
        d = x - mean
    out = d * (var + eps).sqrt().reciprocal()
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


def dropout(x: Tensor, p=0.5, training=True) -> Tensor:
    if not training or p == 0:
        return x
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    keep = device_rand(x.shape, x.device) >= p
    return keep.where_(x * (1.0 / (1.0 - p)), 0.0)


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


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None) -> Tensor:
    """softmax(q k^T * scale + mask) v over [..., L, E] / [..., S, E] / [..., S, Ev]. A bool
    mask keeps True positions; a float mask is added; ``is_causal`` masks j > i."""
    L, S = q.shape[-2], k.shape[-2]
    sc = (1.0 / math.sqrt(q.shape[-1])) if scale is None else scale
    scores = q.matmul(k.transpose(-2, -1)) * sc
    if is_causal:
        if attn_mask is not None:
            raise ValueError("scaled_dot_product_attention: give attn_mask or is_causal, not both (like torch)")
        keep = ops.tril(full((L, S), True, "bool", q.device))
        scores = keep.where_(scores, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == "bool":
            scores = attn_mask.where_(scores, float("-inf"))
        else:
            scores = scores + attn_mask
    attn = scores.softmax(-1)
    if dropout_p:
        attn = dropout(attn, dropout_p, True)
    return attn.matmul(v)


def multi_head_attention_forward(query, key, value, num_heads, in_w, in_b, out_w, out_b, key_padding_mask=None,
                                 need_weights=True, attn_mask=None, average_attn_weights=True, is_causal=False,
                                 dropout_p=0.0, training=True, batch_first=False):
    """torch.nn.MultiheadAttention's computation (packed in-projection, same q/k/v dims)."""
    if not batch_first:
        query, key, value = (t.transpose(0, 1) if t.ndim == 3 else t for t in (query, key, value))
    unbatched = query.ndim == 2
    if unbatched:
        query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    n, L, e = query.shape
    S = key.shape[1]
    hd = e // num_heads
    wq, wk, wv = in_w[:e], in_w[e:2 * e], in_w[2 * e:]
    bq, bk, bv = (in_b[:e], in_b[e:2 * e], in_b[2 * e:]) if in_b is not None else (None, None, None)
    q = linear(query, wq, bq).reshape(n, L, num_heads, hd).permute(0, 2, 1, 3)
    k = linear(key, wk, bk).reshape(n, S, num_heads, hd).permute(0, 2, 1, 3)
    v = linear(value, wv, bv).reshape(n, S, num_heads, hd).permute(0, 2, 1, 3)
    scores = q.matmul(k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))          # [N, H, L, S]
    if is_causal and attn_mask is None:
        attn_mask = ops.triu(full((L, S), True, "bool", q.device), 1)
    if attn_mask is not None:
        m = attn_mask
        if m.ndim == 3:
            m = m.reshape(n, num_heads, L, S)
        if m.dtype == "bool":       # torch's MHA: True means "do not attend"
            scores = m.where_(float("-inf"), scores)
        else:
            scores = scores + m
    if key_padding_mask is not None:
        kp = key_padding_mask.reshape(n, 1, 1, S)
        scores = kp.where_(float("-inf"), scores) if kp.dtype == "bool" else scores + kp
    attn = scores.softmax(-1)
    if dropout_p and training:
        attn = dropout(attn, dropout_p, True)
    out = attn.matmul(v).permute(0, 2, 1, 3).reshape(n, L, e)
    out = linear(out, out_w, out_b)
    if unbatched:
        out = out.squeeze(0)
    elif not batch_first:
        out = out.transpose(0, 1)
    weights = None
    if need_weights:
        weights = attn.mean(1) if average_attn_weights else attn
        if unbatched:
            weights = weights.squeeze(0)
    return out, weights
