"""Linear maps and lookups: Identity, Linear, Embedding, Flatten, Unflatten."""
from __future__ import annotations

import math

import numpy as np

from ..tensor import host_rng
from . import functional as F
from .module import Module, Parameter, _host_array, _uniform


class Identity(Module):
    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)   # PyTorch's kaiming_uniform_(a=sqrt(5))
        self.weight = _uniform((out_features, in_features), bound, device)
        self.bias = _uniform((out_features,), bound, device) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"


class Unflatten(Module):
    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, x):
        d = self.dim % x.ndim
        return x.reshape(x.shape[:d] + self.unflattened_size + x.shape[d + 1:])


class Flatten(Module):
    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)


class Embedding(Module):
    """A lookup table; weight ~ N(0, 1) like torch, the ``padding_idx`` row zero and untrained."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, device=None, dtype=None,
                 _weight=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        w = host_rng().standard_normal((num_embeddings, embedding_dim)).astype(np.float32) if _weight is None \
            else _host_array(_weight).astype(np.float32)
        if padding_idx is not None:
            w[padding_idx] = 0
        self.weight = Parameter(w, device)

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None):
        arr = _host_array(embeddings)
        m = cls(arr.shape[0], arr.shape[1], padding_idx, _weight=arr)
        m.weight.requires_grad = not freeze
        return m

    def forward(self, idx):
        return F.embedding(idx, self.weight, self.padding_idx)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"
