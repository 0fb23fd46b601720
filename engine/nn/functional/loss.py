"""Losses: regression, KL, negative log-likelihood, cross-entropy, binary cross-entropy."""
from __future__ import annotations

from ... import ir, ops
from ... import realize as _rz
from ...buffers import known_range
from ...tensor import Tensor, arange


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
    compiled step the check is repeated at every replay. Targets made from host data
    carry their range (``buffers.known_range``, noted at the upload), so the usual
    case costs no download: a download would wait for the device to finish everything
    queued before it."""
    def check():
        st = target._storage.node
        bounds = known_range(st) if st.op == "BUFFER" else None
        if bounds is not None and bounds[0] >= 0 and bounds[1] < n_classes:
            return      # any view's values lie within its storage's range
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
    _rz.record_host_action(check)


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


_ids: dict = {}


def _class_ids(c: int, device, dtype) -> Tensor:
    """0..C-1 on ``device``, uploaded once: a fresh upload every step would be a blocking
    write, which waits for everything queued before it (the previous step's kernels)."""
    key = (device, c, dtype)
    t = _ids.get(key)
    if t is None:
        t = _ids[key] = arange(c, device=device, dtype=dtype)
    return t


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
    onehot = y.unsqueeze(-1).eq(_class_ids(c, y.device, y.dtype))              # [M, C]
    if ignore_index is not None and 0 <= ignore_index < c:
        # an ignore_index outside [0, C) (the default -100) matches no class id already
        onehot = ops.logical_and(onehot, y.ne(ignore_index).unsqueeze(-1))     # all False when ignored
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
