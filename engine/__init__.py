"""Many as One: a PyTorch-shaped neural-network engine that generates OpenCL for any device.

Write a network against this API; it is lowered to an IR, fused into kernels generated
from the Mako templates in ``kernels/``, and run through PyOpenCL on any OpenCL device.
"""
from .ir import ShapeError
from .runtime import Device, BuildError, DeviceNotFound, devices, default_device, set_default_device
from .tensor import (Tensor, tensor, empty, zeros, ones, full, arange, rand, randn, zeros_like, ones_like,
                     cat, stack, where, maximum, minimum, no_grad, manual_seed, random_state,
                     set_random_state, realize_all)
from . import nn, optim
from .jit import compile, CompiledStep, training_step
from .profile import profile
from .explain import explain, Explanation
from .io import save, load
from .export import trace_training_step, StepProgram
from . import examples

__all__ = ["ShapeError", "Device", "BuildError", "DeviceNotFound", "devices", "default_device",
           "set_default_device", "Tensor", "tensor", "empty", "zeros", "ones", "full", "arange", "rand",
           "randn", "zeros_like", "ones_like", "cat", "stack", "where", "maximum", "minimum",
           "no_grad", "manual_seed", "random_state", "set_random_state", "realize_all", "nn", "optim",
           "compile", "CompiledStep", "training_step", "profile", "explain", "Explanation", "save", "load",
           "trace_training_step", "StepProgram", "examples"]
