"""Scaled dot-product attention and the multi-head attention forward pass."""
from __future__ import annotations

import math

from ... import ops
from ...tensor import Tensor, full
from .conv import linear
from .normalization import dropout


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
