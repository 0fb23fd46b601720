"""Modules: parameters, state dicts, train/eval, forward hooks; the common layers. The
base class is in module.py, the layers by family in linear.py, conv.py, activation.py,
normalization.py, containers.py, attention.py and loss.py; this module gathers them."""
from __future__ import annotations

from .activation import (ELU, GELU, Hardsigmoid, Hardswish, Hardtanh, LeakyReLU, LogSoftmax, Mish, ReLU, ReLU6,
                         SiLU, Sigmoid, Softmax, Softplus, Tanh)
from .attention import MultiheadAttention
from .containers import ModuleDict, ModuleList, Sequential
from .conv import AdaptiveAvgPool1d, AdaptiveAvgPool2d, AvgPool2d, Conv1d, Conv2d, MaxPool2d
from .linear import Embedding, Flatten, Identity, Linear, Unflatten
from .loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss, SmoothL1Loss
from .module import Module, Parameter
from .normalization import BatchNorm1d, BatchNorm2d, Dropout, LayerNorm

__all__ = ["Parameter", "Module", "Linear", "Conv1d", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
           "AdaptiveAvgPool1d", "Flatten", "Unflatten", "ReLU", "ReLU6", "GELU", "SiLU", "Mish", "LeakyReLU", "ELU",
           "Softplus", "Hardtanh", "Hardswish", "Hardsigmoid", "Tanh", "Sigmoid", "Softmax", "LogSoftmax", "Dropout",
           "LayerNorm", "BatchNorm1d", "BatchNorm2d", "Sequential", "ModuleList", "ModuleDict", "Identity",
           "Embedding", "MultiheadAttention", "CrossEntropyLoss", "MSELoss", "NLLLoss", "BCELoss",
           "BCEWithLogitsLoss", "L1Loss", "SmoothL1Loss"]
