"""MultiheadAttention."""
from __future__ import annotations

import math

import numpy as np

from . import functional as F
from .linear import Linear
from .module import Module, Parameter, _uniform


class MultiheadAttention(Module):
    """torch.nn.MultiheadAttention (same q/k/v dims): ``in_proj_weight`` [3E, E],
    ``in_proj_bias`` and ``out_proj``; forward returns (output, weights averaged over heads
    or None). ``batch_first`` as in torch; a bool attn_mask/key_padding_mask marks what
    is NOT attended."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, batch_first=False, device=None, dtype=None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        if add_bias_kv or add_zero_attn or (kdim not in (None, embed_dim)) or (vdim not in (None, embed_dim)):
            raise NotImplementedError("MultiheadAttention: add_bias_kv, add_zero_attn and other kdim/vdim are not supported")
        self.embed_dim, self.num_heads, self.dropout, self.batch_first = embed_dim, num_heads, dropout, batch_first
        self.head_dim = embed_dim // num_heads
        bound = math.sqrt(6.0 / (embed_dim + 3 * embed_dim))           # xavier_uniform_ on [3E, E]
        self.in_proj_weight = _uniform((3 * embed_dim, embed_dim), bound, device)
        self.in_proj_bias = Parameter(np.zeros(3 * embed_dim, np.float32), device) if bias else None
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, device=device)
        if bias:
            self.out_proj.bias = Parameter(np.zeros(embed_dim, np.float32), device)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        return F.multi_head_attention_forward(
            query, key, value, self.num_heads, self.in_proj_weight, self.in_proj_bias, self.out_proj.weight,
            self.out_proj.bias, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal,
            self.dropout, self.training, self.batch_first)
