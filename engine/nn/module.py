"""The Module base class: parameters, buffers, state dicts, train/eval, forward hooks."""
from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np

from .. import dtypes as _dtypes
from ..runtime import NP_DTYPES, get_device
from ..tensor import Tensor, host_rng, scope, tensor

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
