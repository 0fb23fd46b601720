"""Neural-network layers (PyTorch-shaped)."""
from . import functional, init, utils
from .modules import (Parameter, Module, Linear, Conv1d, Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d,
                      AdaptiveAvgPool1d, Flatten, Unflatten, ReLU, ReLU6, GELU, SiLU, Mish, LeakyReLU, ELU,
                      Softplus, Hardtanh, Hardswish, Hardsigmoid, Tanh, Sigmoid, Softmax, LogSoftmax,
                      Dropout, LayerNorm, BatchNorm1d, BatchNorm2d, Sequential, ModuleList, ModuleDict,
                      Identity, Embedding, MultiheadAttention, CrossEntropyLoss, MSELoss, NLLLoss, BCELoss,
                      BCEWithLogitsLoss, L1Loss, SmoothL1Loss)

__all__ = ["functional", "init", "utils", "Parameter", "Module", "Linear", "Conv1d", "Conv2d", "MaxPool2d", "AvgPool2d",
           "AdaptiveAvgPool2d", "AdaptiveAvgPool1d", "Flatten", "Unflatten", "ReLU", "ReLU6", "GELU",
           "SiLU", "Mish", "LeakyReLU", "ELU", "Softplus", "Hardtanh", "Hardswish", "Hardsigmoid", "Tanh",
           "Sigmoid", "Softmax", "LogSoftmax", "Dropout", "LayerNorm", "BatchNorm1d", "BatchNorm2d",
           "Sequential", "ModuleList", "ModuleDict", "Identity", "Embedding", "MultiheadAttention",
           "CrossEntropyLoss", "MSELoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss", "L1Loss",
           "SmoothL1Loss"]
