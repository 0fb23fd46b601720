"""Neural-network layers (PyTorch-shaped)."""
from . import functional
from .modules import (Parameter, Module, Linear, Conv2d, MaxPool2d, AvgPool2d, Flatten, ReLU, GELU,
                      Tanh, Sigmoid, Dropout, LayerNorm, BatchNorm1d, BatchNorm2d, Sequential, Identity)

__all__ = ["functional", "Parameter", "Module", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten",
           "ReLU", "GELU", "Tanh", "Sigmoid", "Dropout", "LayerNorm", "BatchNorm1d", "BatchNorm2d",
           "Sequential", "Identity"]
