"""The ONNX graph interpreter behind ``engine.onnx.load``.

Each value of the graph is either a numpy array (static: initializers of integer type,
``Constant`` nodes, shapes, and everything computed only from those) or an engine Tensor.
A node whose inputs are all static and whose op has a numpy rule is computed on the host
(constant folding, redone at each call because input shapes may change); every other node
is built from engine ops (``engine.ops`` / ``engine.nn.functional``), so gradients flow
to the float initializers, which are the module's parameters.
"""
from __future__ import annotations

import os

import numpy as np

from ..nn.modules import Module, Parameter
from ..tensor import Tensor
# the op rules register themselves in values.OPS / values.NP when imported
from . import elementwise_rules, layer_rules, reduction_rules, shape_rules  # noqa: F401
from .values import _T, NP, OPS, OnnxImportError, _engine_array, _is_static, _onnx

__all__ = ["load", "OnnxModule", "OnnxImportError", "SUPPORTED_OPS"]

SUPPORTED_OPS = sorted(OPS)


# --- the module ----------------------------------------------------------------------------------

class OnnxModule(Module):
    """An ONNX graph as a module: ``forward(*inputs)`` in the graph's input order (or by
    name as keywords); float initializers are parameters named as in the model."""

    def __init__(self, model):
        super().__init__()
        onnx, helper, nh = _onnx()
        g = model.graph
        self.opset = max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] or [13])
        object.__setattr__(self, "_graph", g)
        init_names = set()
        consts = {}
        for t in g.initializer:
            arr = nh.to_array(t)
            init_names.add(t.name)
            if arr.dtype.kind == "f":
                self._params[t.name] = Parameter(arr.astype(np.float32))
            else:
                consts[t.name] = _engine_array(arr) if arr.dtype != np.bool_ else arr
        object.__setattr__(self, "_consts", consts)
        object.__setattr__(self, "input_names", [i.name for i in g.input if i.name not in init_names])
        object.__setattr__(self, "output_names", [o.name for o in g.output])
        nodes = []
        unsupported = []
        for i, n in enumerate(g.node):
            if n.domain not in ("", "ai.onnx"):
                unsupported.append(f"node {i} {n.name!r}: op {n.domain}.{n.op_type}")
                continue
            if n.op_type not in OPS:
                unsupported.append(f"node {i} {n.name!r}: op {n.op_type}")
                continue
            attrs = {}
            for at in n.attribute:
                v = helper.get_attribute_value(at)
                if isinstance(v, onnx.TensorProto):
                    v = nh.to_array(v)
                elif isinstance(v, bytes):
                    v = v.decode()
                elif isinstance(v, list) and v and isinstance(v[0], bytes):
                    v = [x.decode() for x in v]
                elif at.type == onnx.AttributeProto.GRAPH or at.type == onnx.AttributeProto.GRAPHS:
                    unsupported.append(f"node {i} {n.name!r}: op {n.op_type} with a subgraph attribute")
                attrs[at.name] = v
            nodes.append((i, n.name, n.op_type, list(n.input), list(n.output), attrs))
        if unsupported:
            raise OnnxImportError("unsupported ONNX operators (supported: " + ", ".join(SUPPORTED_OPS) + "):\n  "
                                  + "\n  ".join(unsupported))
        object.__setattr__(self, "_nodes", nodes)
        self._fold_constants()

    def _fold_constants(self):
        """Run, once, every node computable from initializers and Constants alone."""
        known = dict(self._consts)
        keep = []
        for (i, name, opt, ins, outs, attrs) in self._nodes:
            vals = [known.get(x) if x else None for x in ins]
            if opt in NP and all(v is not None for v, x in zip(vals, ins) if x) and \
                    (opt != "Shape" and opt != "Size" or all(v is not None for v in vals)):
                try:
                    res = NP[opt](vals, attrs, {"op": opt, "nout": len(outs), "opset": self.opset})
                    for o, r in zip(outs, res):
                        known[o] = _engine_array(r) if np.asarray(r).dtype != np.bool_ else np.asarray(r)
                    continue
                except Exception:     # noqa: BLE001  (fold at run time instead)
                    pass
            keep.append((i, name, opt, ins, outs, attrs))
        object.__setattr__(self, "_consts", known)
        object.__setattr__(self, "_nodes", keep)

    def forward(self, *args, **kwargs):
        env = dict(self._consts)
        env.update(self._params)
        if len(args) > len(self.input_names):
            raise TypeError(f"the model takes {len(self.input_names)} inputs {self.input_names}, got {len(args)}")
        for name, v in list(zip(self.input_names, args)) + list(kwargs.items()):
            env[name] = v if isinstance(v, Tensor) else _T(np.asarray(v))
        missing = [n for n in self.input_names if n not in env]
        if missing:
            raise TypeError(f"missing model inputs {missing}")
        for (i, name, opt, ins, outs, attrs) in self._nodes:
            vals = [env[x] if x else None for x in ins]
            ctx = {"op": opt, "nout": len(outs), "opset": self.opset}
            try:
                if opt in NP and all(_is_static(v) for v in vals if v is not None) and opt not in ("Shape", "Size"):
                    res = NP[opt](vals, attrs, ctx)
                    res = [_engine_array(r) if np.asarray(r).dtype != np.bool_ else np.asarray(r) for r in res]
                else:
                    res = OPS[opt](vals, attrs, ctx)
            except OnnxImportError as e:
                raise OnnxImportError(f"node {i} {name!r} ({opt}): {e}") from None
            except Exception as e:   # noqa: BLE001
                raise OnnxImportError(f"node {i} {name!r} ({opt}) failed: {type(e).__name__}: {e}") from e
            for o, r in zip(outs, res):
                if o:
                    env[o] = r
        out = tuple(_T(env[o]) for o in self.output_names)
        return out[0] if len(out) == 1 else out


def load(model, external_data_dir=None) -> OnnxModule:
    """An ONNX model (a path, bytes or a ``ModelProto``) as an engine module. External
    data files are read from the model's folder (or ``external_data_dir``)."""
    onnx, _, _ = _onnx()
    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    elif isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    if external_data_dir is not None:
        from onnx.external_data_helper import load_external_data_for_model
        load_external_data_for_model(model, external_data_dir)
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"engine.onnx.load: expected a path, bytes or onnx.ModelProto, got {type(model).__name__}")
    return OnnxModule(model)
