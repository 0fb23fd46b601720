"""Modules: parameters, state dicts, train/eval, forward hooks; the common layers."""
from __future__ import annotations

import math
from collections import OrderedDict

from collections import namedtuple

import numpy as np

from .. import dtypes as _dtypes
from ..runtime import NP_DTYPES
from ..tensor import Tensor, full, host_rng, scope, tensor
from . import functional as F

__all__ = ["Parameter", "Module", "Linear", "Conv1d", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
           "AdaptiveAvgPool1d", "Flatten", "Unflatten", "ReLU", "ReLU6", "GELU", "SiLU", "Mish", "LeakyReLU", "ELU",
           "Softplus", "Hardtanh", "Hardswish", "Hardsigmoid", "Tanh", "Sigmoid", "Softmax", "LogSoftmax", "Dropout",
           "LayerNorm", "BatchNorm1d", "BatchNorm2d", "Sequential", "ModuleList", "ModuleDict", "Identity",
           "Embedding", "MultiheadAttention", "CrossEntropyLoss", "MSELoss", "NLLLoss", "BCELoss",
           "BCEWithLogitsLoss", "L1Loss", "SmoothL1Loss"]

_IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Parameter(Tensor):
    """A realized tensor that a Module trains."""
    __slots__ = ()

    def __init__(self, data, device=None):
        src = data if isinstance(data, Tensor) else tensor(np.asarray(data, dtype=np.float32), device=device)
        if src._view:
            src = src.clone().detach()
        src.realize()
        super().__init__(src.node, src.device, requires_grad=True)
        # like torch.nn.Parameter(t): the parameter shares t's storage
        self._storage = src._storage


def _uniform(shape, bound, device):
    return Parameter(host_rng().uniform(-bound, bound, size=shape).astype(np.float32), device)


class _Hook:
    def __init__(self, hooks, fn):
        self.hooks, self.fn = hooks, fn

    def remove(self):
        if self.fn in self.hooks:
            self.hooks.remove(self.fn)


class Module:
    def __init__(self):
        object.__setattr__(self, "_params", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_hooks", [])
        object.__setattr__(self, "_name", "")
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_params" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() first")
        for d in (self._params, self._modules, self._buffers):
            d.pop(name, None)
        if isinstance(value, Parameter):
            self._params[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name, value: Tensor, persistent=True):
        """A tensor the module keeps (state dicts hold it unless ``persistent=False``)."""
        if value is not None:
            value.realize()
        self._buffers[name] = value
        if not persistent:
            self.__dict__.setdefault("_non_persistent", set()).add(name)
        object.__setattr__(self, name, value)

    def register_parameter(self, name, param):
        setattr(self, name, param)

    def add_module(self, name, module):
        self._modules[name] = module
        object.__setattr__(self, name, module)

    register_module = add_module

    def get_submodule(self, target: str):
        m = self
        for part in target.split(".") if target else []:
            m = m._modules[part]
        return m

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        with scope(self._name or type(self).__name__):
            out = self.forward(*args, **kwargs)
        for fn in list(self._hooks):
            fn(self, args, out)
        return out

    def register_forward_hook(self, fn):
        self._hooks.append(fn)
        return _Hook(self._hooks, fn)

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def children(self):
        return list(self._modules.values())

    def named_parameters(self, prefix="", recurse=True):
        seen = set()
        for mname, m in (self.named_modules(prefix) if recurse else [(prefix, self)]):
            for pname, p in m._params.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self, recurse=True):
        return [p for _, p in self.named_parameters(recurse=recurse)]

    def named_buffers(self, prefix="", recurse=True):
        for mname, m in (self.named_modules(prefix) if recurse else [(prefix, self)]):
            for bname, b in m._buffers.items():
                if b is not None:
                    yield (f"{mname}.{bname}" if mname else bname), b

    def buffers(self, recurse=True):
        return [b for _, b in self.named_buffers(recurse=recurse)]

    def named_children(self):
        return iter(self._modules.items())

    def state_dict(self) -> "OrderedDict[str, Tensor]":
        """Parameters and persistent buffers in torch's order and key names: each module's
        own parameters, then its buffers, then its children's, depth first."""
        out = OrderedDict()
        for mname, m in self.named_modules():
            pre = f"{mname}." if mname else ""
            for k, p in m._params.items():
                if p is not None:
                    out[pre + k] = p
            skip = m.__dict__.get("_non_persistent", ())
            for k, b in m._buffers.items():
                if b is not None and k not in skip:
                    out[pre + k] = b
        return out

    def load_state_dict(self, state, strict=True):
        """Copy values from ``state`` (engine tensors, numpy arrays, torch tensors) into
        the parameters and buffers, each kept in its own dtype. Returns torch's
        ``(missing_keys, unexpected_keys)``; with ``strict`` either is an error."""
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for k, t in own.items():
            if k not in state:
                continue
            arr = _host_array(state[k])
            if t.shape == () and arr.shape == (1,):     # engine.tensor() of a 0-d array is (1,) today
                arr = arr.reshape(())
            if tuple(arr.shape) != t.shape:
                raise ValueError(f"load_state_dict: {k} has shape {tuple(arr.shape)} in the state but {t.shape} in the model")
            # the value in the tensor's own dtype: a bool mask or an int64 counter written as
            # float32 would land in the buffer as other bytes (issue 9)
            v = tensor(arr.astype(NP_DTYPES[t.dtype]) if t.dtype != "bool" else arr.astype(bool),
                       dtype=t.dtype, device=t.device)
            t.assign_(v.reshape(t.shape) if v.shape != t.shape else v)   # tensor() makes 0-d arrays (1,)
        return _IncompatibleKeys(missing, unexpected)

    def apply(self, fn):
        """Call ``fn`` on every submodule (children first) and on this module."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def to(self, *args, **kwargs):
        """``.to(dtype)`` / ``.to(device)``: float32 and the module's own device are kept
        as they are; other dtypes or devices are not supported for modules yet."""
        for a in list(args) + list(kwargs.values()):
            if a is None:
                continue
            try:
                dt = _dtypes.as_dtype(a)
            except TypeError:
                dt = None
            if dt is not None:
                if dt != "float32":
                    raise TypeError(f"Module.to: only float32 parameters are supported, got {dt}")
                continue
            if isinstance(a, str) and a.split(":")[0] in ("cpu", "cuda", "mps"):
                continue
            params = self.parameters()
            from ..runtime import get_device
            if params and get_device(a) is not params[0].device:
                raise NotImplementedError("Module.to(device): moving a module to another OpenCL device is not supported yet")
        return self

    def float(self):
        return self

    def cpu(self):
        return self

    def cuda(self, device=None):
        return self

    def type(self, dst_type):
        return self.to(dst_type)

    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            p.grad = None

    def name_modules(self):
        """Give every submodule its dotted path as the scope label of the nodes it builds."""
        for name, m in self.named_modules():
            object.__setattr__(m, "_name", name.split(".")[-1] if name else "")
        return self

    def extra_repr(self):
        return ""

    def __repr__(self):
        inner = "".join(f"\n  ({k}): " + repr(m).replace("\n", "\n  ") for k, m in self._modules.items())
        return f"{type(self).__name__}({self.extra_repr()}{inner}{chr(10) if inner else ''})"


def _host_array(v) -> np.ndarray:
    if hasattr(v, "detach"):           # engine or torch tensor
        v = v.detach()
    if hasattr(v, "cpu") and not isinstance(v, Tensor):
        v = v.cpu()
    if hasattr(v, "numpy"):
        return np.asarray(v.numpy())
    return np.asarray(v)


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


class Conv2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        if padding_mode != "zeros":
            raise NotImplementedError(f"Conv2d: padding_mode {padding_mode!r} is not supported (only 'zeros')")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels {in_channels} and out_channels {out_channels} must be divisible by groups {groups}")
        k = F._pair(kernel_size)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, k
        fan_in = in_channels // groups * k[0] * k[1]
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = _uniform((out_channels, in_channels // groups) + k, bound, device)
        self.bias = _uniform((out_channels,), bound, device) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        g = f", groups={self.groups}" if self.groups != 1 else ""
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}{g}"


class Conv1d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        if padding_mode != "zeros":
            raise NotImplementedError(f"Conv1d: padding_mode {padding_mode!r} is not supported (only 'zeros')")
        k = F._single(kernel_size)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (k,)
        bound = 1.0 / math.sqrt(in_channels // groups * k)
        self.weight = _uniform((out_channels, in_channels // groups, k), bound, device)
        self.bias = _uniform((out_channels,), bound, device) if bias else None

    def forward(self, x):
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(MaxPool2d):
    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class AdaptiveAvgPool2d(Module):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)


class AdaptiveAvgPool1d(AdaptiveAvgPool2d):
    def forward(self, x):
        return F.adaptive_avg_pool1d(x, self.output_size)


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


class ReLU(Module):
    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, x):
        return x.relu()


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)


class _Act(Module):
    fn = None

    def forward(self, x):
        return type(self).fn(x)


class SiLU(_Act):
    fn = staticmethod(F.silu)


class Mish(_Act):
    fn = staticmethod(F.mish)


class ReLU6(_Act):
    fn = staticmethod(F.relu6)


class Hardswish(_Act):
    fn = staticmethod(F.hardswish)


class Hardsigmoid(_Act):
    fn = staticmethod(F.hardsigmoid)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)


class ELU(Module):
    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return F.elu(x, self.alpha)


class Softplus(Module):
    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, x):
        return F.softplus(x, self.beta, self.threshold)


class Hardtanh(Module):
    def __init__(self, min_val=-1.0, max_val=1.0):
        super().__init__()
        self.min_val, self.max_val = min_val, max_val

    def forward(self, x):
        return F.hardtanh(x, self.min_val, self.max_val)


class Softmax(Module):
    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x.softmax(-1 if self.dim is None else self.dim)


class LogSoftmax(Softmax):
    def forward(self, x):
        return x.log_softmax(-1 if self.dim is None else self.dim)


class Tanh(Module):
    def forward(self, x):
        return x.tanh()


class Sigmoid(Module):
    def forward(self, x):
        return x.sigmoid()


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


class Sequential(Module):
    def __init__(self, *layers):
        super().__init__()
        named = layers[0].items() if len(layers) == 1 and isinstance(layers[0], OrderedDict) else \
            ((str(i), layer) for i, layer in enumerate(layers))
        for name, layer in named:
            self._modules[name] = layer
            object.__setattr__(self, name, layer) if name.isidentifier() else None
        self.name_modules()

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


class ModuleList(Module):
    """A list of modules whose parameters are the model's (keys "0", "1", ...)."""

    def __init__(self, modules=None):
        super().__init__()
        for m in modules or ():
            self.append(m)

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def insert(self, index, module):
        mods = list(self._modules.values())
        mods.insert(index, module)
        self._modules.clear()
        for i, m in enumerate(mods):
            self.add_module(str(i), m)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return ModuleList(list(self._modules.values())[i])
        return list(self._modules.values())[i]

    def __setitem__(self, i, module):
        key = list(self._modules.keys())[i]
        self.add_module(key, module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList has no forward(): iterate over it")


class ModuleDict(Module):
    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def update(self, modules):
        items = modules.items() if hasattr(modules, "items") else modules
        for k, m in items:
            self[k] = m

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __contains__(self, key):
        return key in self._modules

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict has no forward()")


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


class _Loss(Module):
    def __init__(self, reduction="mean", **kw):
        super().__init__()
        self.reduction, self.kw = reduction, kw


class CrossEntropyLoss(_Loss):
    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        self.weight, self.ignore_index, self.label_smoothing = weight, ignore_index, label_smoothing

    def forward(self, logits, target):
        return F.cross_entropy(logits, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing)


class NLLLoss(CrossEntropyLoss):
    def forward(self, logp, target):
        return F.nll_loss(logp, target, self.weight, self.ignore_index, self.reduction)


class MSELoss(_Loss):
    def forward(self, a, b):
        return F.mse_loss(a, b, self.reduction)


class L1Loss(_Loss):
    def forward(self, a, b):
        return F.l1_loss(a, b, self.reduction)


class SmoothL1Loss(_Loss):
    def __init__(self, reduction="mean", beta=1.0):
        super().__init__(reduction)
        self.beta = beta

    def forward(self, a, b):
        return F.smooth_l1_loss(a, b, self.reduction, self.beta)


class BCELoss(_Loss):
    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction)
        self.weight = weight

    def forward(self, p, y):
        return F.binary_cross_entropy(p, y, self.weight, self.reduction)


class BCEWithLogitsLoss(_Loss):
    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction)
        self.weight, self.pos_weight = weight, pos_weight

    def forward(self, x, y):
        return F.binary_cross_entropy_with_logits(x, y, self.weight, self.reduction, self.pos_weight)
