"""torch-style printing of a tensor with its values."""
from __future__ import annotations

import numpy as np

from ..tensor import Tensor


def tensor_repr(x: Tensor) -> str:
    """torch-style printing with the values: ``tensor([[1.5000, 2.0000]], requires_grad=True)``
    (computes the tensor; falls back to shape and dtype if it cannot be read)."""
    try:
        arr = x.numpy()
    except Exception:   # noqa: BLE001  (e.g. inside a capture)
        return f"tensor(<shape={x.shape}, dtype={x.dtype}>)"
    if arr.dtype.kind == "f":
        integral = bool(np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)))
        body = np.array2string(arr, separator=", ", prefix="tensor(", threshold=1000, edgeitems=3,
                               precision=4, floatmode="maxprec" if integral else "fixed",
                               suppress_small=False)
    else:
        body = np.array2string(arr, separator=", ", prefix="tensor(", threshold=1000, edgeitems=3)
    extras = []
    if x.dtype == "int32":
        extras.append("dtype=engine.int32")
    if x.requires_grad:
        extras.append("requires_grad=True")
    return "tensor(" + body + "".join(", " + e for e in extras) + ")"
