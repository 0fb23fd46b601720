"""Dropout and normalization: LayerNorm, BatchNorm1d, BatchNorm2d."""
from __future__ import annotations

import numpy as np

from ..tensor import full, tensor
from . import functional as F
from .module import Module, Parameter


class Dropout(Module):
    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)


class LayerNorm(Module):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, device=None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.weight = Parameter(np.ones(shape, np.float32), device) if elementwise_affine else None
        self.bias = Parameter(np.zeros(shape, np.float32), device) if elementwise_affine else None

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class _BatchNorm(Module):
    _ndim = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None):
        super().__init__()
        if momentum is None:
            raise NotImplementedError("BatchNorm: momentum=None (cumulative average) is not supported")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.track_running_stats = track_running_stats
        self.weight = Parameter(np.ones(num_features, np.float32), device) if affine else None
        self.bias = Parameter(np.zeros(num_features, np.float32), device) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", tensor(np.zeros(num_features, np.float32), device=device))
            self.register_buffer("running_var", tensor(np.ones(num_features, np.float32), device=device))
            self.register_buffer("num_batches_tracked", full((), 0, "int64", device=device).realize())
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def forward(self, x):
        if x.ndim not in self._ndim or x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}): got input of shape {x.shape}")
        training = self.training or not self.track_running_stats
        if self.training and self.track_running_stats:
            self.num_batches_tracked.assign_(self.num_batches_tracked + 1)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training, self.momentum, self.eps)


class BatchNorm1d(_BatchNorm):
    _ndim = (2, 3)


class BatchNorm2d(_BatchNorm):
    _ndim = (4,)
