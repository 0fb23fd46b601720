"""torch.nn.utils: gradient clipping."""
from __future__ import annotations

from ..tensor import Tensor, no_grad

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None) -> Tensor:
    """Scale the gradients so their joint ``norm_type`` norm is at most ``max_norm``
    (torch's formula: coefficient max_norm / (total + 1e-6), capped at 1). Each ``p.grad``
    becomes a new tensor ``p.grad * coef`` (no host synchronisation, so it works inside
    ``engine.compile``). Returns the total norm before clipping, as a tensor."""
    params = _grads(parameters)
    max_norm, norm_type = float(max_norm), float(norm_type)
    if not params:
        from ..tensor import zeros
        return zeros(())
    with no_grad():
        if norm_type == float("inf"):
            total = None
            for p in params:
                m = p.grad.abs()._reduce("RMAX", None, False)
                total = m if total is None else total.maximum(m)
        else:
            acc = None
            for p in params:
                g = p.grad
                s = (g * g).sum() if norm_type == 2.0 else (g.abs() ** norm_type).sum()
                acc = s if acc is None else acc + s
            total = acc.sqrt() if norm_type == 2.0 else acc ** (1.0 / norm_type)
        if error_if_nonfinite:
            v = total.item()
            if v != v or v in (float("inf"), float("-inf")):
                raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is non-finite ({v})")
        coef = (total + 1e-6).reciprocal() * max_norm
        coef = coef.minimum(1.0)
        for p in params:
            p.grad = p.grad * coef
    return total


def clip_grad_value_(parameters, clip_value) -> None:
    """Clamp every gradient element to [-clip_value, clip_value]."""
    c = float(clip_value)
    with no_grad():
        for p in _grads(parameters):
            g = p.grad
            p.grad = (g > c).where_(c, (g < -c).where_(-c, g))
