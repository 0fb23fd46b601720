"""Many as One: a PyTorch-shaped neural-network engine that generates OpenCL for any device.

Write a network against this API; it is lowered to an IR, fused into kernels generated
from the Mako templates in ``kernels/``, and run through PyOpenCL on any OpenCL device.
"""
# ruff: noqa: F401  (this module re-exports the public API)
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
from . import autograd, dtypes, lr_scheduler, ops, onnx, utils  # noqa: F401
from .autograd import grad  # noqa: F401
from .dtypes import dtype, float32, float, int32, int, int64, long, bool, float64, double, float16, half, bfloat16  # noqa: A001,F401
from .ops import (clamp, clip, std, var, cumsum, cumprod, topk, sort, argsort, kthvalue, einsum, bmm, mm, addmm, baddbmm,
                  outer, gather, scatter, scatter_add, index_select, take_along_dim, masked_select, nonzero, split, chunk,
                  unbind, narrow, tril, triu, diag, flip, roll, tile, repeat_interleave, eye, linspace, full_like,
                  empty_like, rand_like, randn_like, randint, randperm, from_numpy, as_tensor,
                  isnan, isinf, isfinite, masked_fill, logical_and, logical_or, logical_xor, logical_not, floor_divide,
                  remainder, fmod, div, pow, exp, log, log2, log10, log1p, expm1, sqrt, rsqrt, abs, neg, reciprocal,
                  square, tanh, sigmoid, relu, erf, floor, ceil, trunc, round, frac, sign, lerp, max, min, amax, amin,
                  argmax, argmin, sum, mean, prod, logsumexp, norm, all, any, matmul, t, softmax, log_softmax, allclose,
                  equal, numel)  # noqa: A001,F401

# torch's Tensor methods composed in engine/ops/ (max/min with indices, sort, gather, ...),
# bound once here so every Tensor has them
ops.bind_methods(Tensor)

__all__ = ["ShapeError", "Device", "BuildError", "DeviceNotFound", "devices", "default_device",
           "set_default_device", "Tensor", "tensor", "empty", "zeros", "ones", "full", "arange", "rand",
           "randn", "zeros_like", "ones_like", "cat", "stack", "where", "maximum", "minimum",
           "no_grad", "manual_seed", "random_state", "set_random_state", "realize_all", "nn", "optim",
           "compile", "CompiledStep", "training_step", "profile", "explain", "Explanation", "save", "load",
           "trace_training_step", "StepProgram", "examples", "autograd", "grad", "dtypes", "lr_scheduler", "ops",
           "onnx", "utils"] + [n for n in ops.__all__ if n not in ("TENSOR_METHODS",)] + \
          ["dtype", "float32", "float", "int32", "int", "int64", "long", "bool", "float64", "double", "float16",
           "half", "bfloat16"]
