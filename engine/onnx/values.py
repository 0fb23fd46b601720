"""What flows through an imported graph: host numpy arrays (static) or engine Tensors, and
the registry of op rules (``op``: the engine rule, and a numpy rule for static inputs)."""
from __future__ import annotations

import numpy as np

from ..tensor import Tensor, full, tensor


class OnnxImportError(RuntimeError):
    """An ONNX model uses something the importer does not support, or a node failed."""


def _onnx():
    try:
        import onnx  # noqa: F401  (optional extra, imported only here)
        from onnx import helper, numpy_helper
    except ImportError as e:   # pragma: no cover
        raise ImportError("engine.onnx needs the 'onnx' package: pip install onnx "
                          "(only its protobuf reader is used)") from e
    return onnx, helper, numpy_helper


# --- values ---------------------------------------------------------------------------------

def _is_static(x) -> bool:
    return isinstance(x, np.ndarray)


def _host(x) -> np.ndarray:
    return x.numpy() if isinstance(x, Tensor) else np.asarray(x)


def _engine_array(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        return arr.astype(np.float32)
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype == np.int32:
        return arr
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    raise OnnxImportError(f"unsupported tensor element type {arr.dtype}")


def _T(x) -> Tensor:
    """Any value as an engine tensor (0-d arrays stay 0-d)."""
    if isinstance(x, Tensor):
        return x
    arr = _engine_array(x)
    if arr.ndim == 0:
        return full((), arr.item(), {"f": "float32", "b": "bool"}.get(arr.dtype.kind, str(arr.dtype)))
    return tensor(arr)


def _ints(x) -> list:
    return [int(v) for v in np.asarray(_host(x)).reshape(-1)]


def _edtype(onnx_type: int) -> str:
    _, helper, _ = _onnx()
    npd = np.dtype(helper.tensor_dtype_to_np_dtype(onnx_type))
    if npd.kind == "f":
        return "float32"
    if npd == np.bool_:
        return "bool"
    if npd == np.int32:
        return "int32"
    if npd.kind in "iu":
        return "int64"
    raise OnnxImportError(f"unsupported Cast target {npd}")


# --- op rules ---------------------------------------------------------------------------------
# rule(ins, attrs, node_ctx) -> list of outputs. ``ins`` holds numpy arrays or Tensors
# (None for an omitted optional input). NP rules run when every input is static.

OPS: dict = {}
NP: dict = {}


def op(*names, np_rule=None):
    def deco(fn):
        for n in names:
            OPS[n] = fn
            if np_rule is not None:
                NP[n] = np_rule
        return fn
    return deco
