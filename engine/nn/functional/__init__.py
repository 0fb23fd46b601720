"""Stateless layers, composed from Tensor ops (so their gradients come for free): by family
in conv.py, activation.py, embedding.py, loss.py, normalization.py, padding.py and
attention.py; this module gathers them."""
from __future__ import annotations

from .activation import (cosine_similarity, elu, gelu, hardsigmoid, hardswish, hardtanh, leaky_relu, log_softmax,
                         logsigmoid, mish, normalize, relu, relu6, sigmoid, silu, softmax, softplus, tanh)
from .attention import multi_head_attention_forward, scaled_dot_product_attention
from .conv import adaptive_avg_pool1d, adaptive_avg_pool2d, avg_pool2d, conv1d, conv2d, linear, max_pool2d
from .embedding import embedding, one_hot
from .loss import (binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, huber_loss, kl_div,
                   l1_loss, mse_loss, nll_loss, smooth_l1_loss)
from .normalization import batch_norm, dropout, layer_norm
from .padding import interpolate, pad

__all__ = ["linear", "conv1d", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_avg_pool1d",
           "relu", "relu6", "gelu", "sigmoid", "tanh", "silu", "mish", "softplus", "leaky_relu", "elu", "hardtanh",
           "hardsigmoid", "hardswish", "logsigmoid", "softmax", "log_softmax", "cross_entropy", "nll_loss",
           "binary_cross_entropy", "binary_cross_entropy_with_logits", "mse_loss", "l1_loss", "smooth_l1_loss",
           "huber_loss", "kl_div", "cosine_similarity", "layer_norm", "batch_norm", "dropout", "one_hot",
           "embedding", "scaled_dot_product_attention", "pad", "interpolate", "normalize",
           "multi_head_attention_forward"]

