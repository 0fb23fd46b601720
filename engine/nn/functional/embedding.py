"""One-hot rows and embedding lookups (one-hot matmuls)."""
from __future__ import annotations

from ...tensor import Tensor, arange
from .loss import _check_targets


def one_hot(target: Tensor, num_classes: int = -1) -> Tensor:
    """One-hot rows. Like torch (whose result is int64) the classes are exact; this one is
    float32 so it can be multiplied straight into a matmul."""
    if num_classes < 0:
        num_classes = int(target.numpy().max()) + 1
    classes = arange(num_classes, device=target.device, dtype=target.dtype)
    return target.unsqueeze(-1).eq(classes).float()


def embedding(input: Tensor, weight: Tensor, padding_idx=None, max_norm=None) -> Tensor:  # noqa: A002
    """Rows of ``weight`` picked by the integer ``input``: a one-hot matmul (O(numel(input)
    * num_embeddings * dim); the gradient lands on the picked rows, summed for repeats).
    The ``padding_idx`` row gets no gradient."""
    if max_norm is not None:
        raise NotImplementedError("embedding: max_norm is not supported")
    if input.dtype not in ("int32", "int64"):
        raise TypeError(f"embedding: indices must be an integer tensor, got {input.dtype}")
    v, d = weight.shape
    _check_targets(input, v, None, "embedding")
    hot = input.reshape(-1).unsqueeze(-1).eq(arange(v, device=input.device, dtype=input.dtype)).float()  # [M, V]
    if padding_idx is not None:
        pad = padding_idx % v
        keep = arange(v, device=input.device).ne(pad).float()
        out = (hot * keep).matmul(weight) + (hot * (1.0 - keep)).matmul(weight.detach())
    else:
        out = hot.matmul(weight)
    return out.reshape(input.shape + (d,))
