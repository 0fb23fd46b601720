"""Loss modules: cross-entropy, NLL, MSE, L1, smooth L1, BCE."""
from __future__ import annotations

from . import functional as F
from .module import Module


class _Loss(Module):
    def __init__(self, reduction="mean", **kw):
        super().__init__()
        self.reduction, self.kw = reduction, kw


class CrossEntropyLoss(_Loss):
    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        self.weight, self.ignore_index, self.label_smoothing = weight, ignore_index, label_smoothing

    def forward(self, logits, target):
        return F.cross_entropy(logits, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing)


class NLLLoss(CrossEntropyLoss):
    def forward(self, logp, target):
        return F.nll_loss(logp, target, self.weight, self.ignore_index, self.reduction)


class MSELoss(_Loss):
    def forward(self, a, b):
        return F.mse_loss(a, b, self.reduction)


class L1Loss(_Loss):
    def forward(self, a, b):
        return F.l1_loss(a, b, self.reduction)


class SmoothL1Loss(_Loss):
    def __init__(self, reduction="mean", beta=1.0):
        super().__init__(reduction)
        self.beta = beta

    def forward(self, a, b):
        return F.smooth_l1_loss(a, b, self.reduction, self.beta)


class BCELoss(_Loss):
    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction)
        self.weight = weight

    def forward(self, p, y):
        return F.binary_cross_entropy(p, y, self.weight, self.reduction)


class BCEWithLogitsLoss(_Loss):
    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction)
        self.weight, self.pos_weight = weight, pos_weight

    def forward(self, x, y):
        return F.binary_cross_entropy_with_logits(x, y, self.weight, self.reduction, self.pos_weight)
