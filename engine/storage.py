"""Storage and versions: what a Tensor's values live in, and how in-place writes happen.

Every Tensor references a ``Storage``. A storage holds its current IR node (lazy, or a
BUFFER node once realized) and a version counter. Views (reshape/permute/expand/slice,
``detach``) are Tensors that share their base's storage and carry a chain of movement
ops from the storage's node to their own.

An in-place write never changes what an existing IR node means. It gives the storage a
new node and bumps its version:

- a lazy storage simply takes the new expression as its node;
- a realized storage keeps its device buffer handle (a compiled step's launch list and an
  optimizer's fused update point at it): the new value is computed into a scratch buffer,
  then the two handles swap memory (``commit``). The old BUFFER node keeps the old memory
  when anything still reads it (a lazy expression, a saved tensor, another storage), so no
  result is ever served from a stale version, and nothing is copied when nothing does.
"""
from __future__ import annotations

import math
import weakref

from . import ir
from .buffers import bind_buffer, buffer_of, has_buffer
from .shapes import contiguous_strides

__all__ = ["Storage", "commit", "view_strides", "reshape_strides", "apply_view", "unview"]


class Storage:
    """A tensor's values: the current IR node and the number of writes so far."""
    __slots__ = ("node", "version", "__weakref__")

    def __init__(self, node: ir.Node):
        self.node, self.version = node, 0

    @property
    def realized(self) -> bool:
        return self.node.op == "BUFFER" and has_buffer(self.node)


def commit(storage: Storage, scratch) -> None:
    """The storage's new value is in ``scratch`` (a Buffer of the same size): make it the
    storage's, keeping the storage's own buffer handle. Run again by every replay of a
    compiled step, so it must not depend on anything but the two objects."""
    old = storage.node
    own = buffer_of(old)
    new = ir.buffer(old.shape, old.dtype)
    bind_buffer(new, own)
    storage.node = new
    storage.version += 1
    alive = weakref.ref(old)
    del old
    still_read = alive()
    if still_read is None:
        # Nothing reads the old version: its memory becomes the scratch of the next write.
        own.mem, scratch.mem = scratch.mem, own.mem
        return
    # Someone still reads the old version: it keeps the old memory under a handle of its
    # own, and the scratch handle (reused by a replayed step) gets fresh memory.
    keep = own.device.alloc(own.nbytes)
    keep.mem, own.mem, scratch.mem = own.mem, scratch.mem, keep.mem
    bind_buffer(still_read, keep)


# --- views -----------------------------------------------------------------------------

def view_strides(op: str, arg, shape, strides):
    """Element strides of a view of a tensor with ``shape``/``strides`` (None: the view is
    not expressible as strides of the same memory, so it must be a copy)."""
    if op == "PERMUTE":
        return tuple(strides[o] for o in arg)
    if op == "EXPAND":
        return tuple(0 if s != n else st for s, n, st in zip(shape, arg, strides))
    if op == "SHRINK":
        return tuple(st * step for (_, _, step), st in zip(arg, strides))
    if op == "RESHAPE":
        return reshape_strides(shape, strides, arg)
    raise ValueError(op)


def reshape_strides(shape, strides, new_shape):
    """PyTorch's rule (``computeStride``): a reshape is a view when every run of merged
    dims is contiguous in memory; None when it must be a copy."""
    if not shape or math.prod(shape) == 0:
        return contiguous_strides(new_shape)
    out = [0] * len(new_shape)
    view_d = len(new_shape) - 1
    base = strides[-1]
    tensor_numel = view_numel = 1
    for d in range(len(shape) - 1, -1, -1):
        tensor_numel *= shape[d]
        if d == 0 or (shape[d - 1] != 1 and strides[d - 1] != tensor_numel * base):
            while view_d >= 0 and (view_numel < tensor_numel or new_shape[view_d] == 1):
                out[view_d] = view_numel * base
                view_numel *= new_shape[view_d]
                view_d -= 1
            if view_numel != tensor_numel:
                return None
            if d > 0:
                base = strides[d - 1]
                tensor_numel = view_numel = 1
    return tuple(out) if view_d == -1 else None


_IR_VIEW = {"RESHAPE": ir.reshape, "PERMUTE": ir.permute, "EXPAND": ir.expand, "SHRINK": ir.shrink}


def apply_view(node: ir.Node, chain) -> ir.Node:
    for op, arg in chain:
        node = _IR_VIEW[op](node, arg)
    return node


def unview(base: ir.Node, chain, value: ir.Node) -> ir.Node:
    """The base node after writing ``value`` through the view ``chain`` of ``base``."""
    steps = [base]
    for op, arg in chain:
        steps.append(_IR_VIEW[op](steps[-1], arg))
    for (op, arg), src in zip(reversed(chain), reversed(steps[:-1])):
        if op == "RESHAPE":
            value = ir.reshape(value, src.shape)
        elif op == "PERMUTE":
            value = ir.permute(value, tuple(sorted(range(len(arg)), key=arg.__getitem__)))
        elif op == "SHRINK":
            placed = _unshrink(value, src.shape, arg)
            mask = _unshrink(ir.const(True, value.shape, "bool"), src.shape, arg)
            value = ir.where(mask, placed, src)
        else:
            raise RuntimeError("unsupported operation: more than one element of the written-to tensor "
                               "refers to a single memory location (an expanded view); clone() it first")
    return value


def _unshrink(value: ir.Node, shape, bounds) -> ir.Node:
    """``value`` placed where ``shrink(bounds)`` took it from a tensor of ``shape``; zero elsewhere."""
    for d, (start, stop, step) in enumerate(bounds):
        n = value.shape[d]
        if step > 1 and n > 0:
            # spread: step-1 zeros after each element along d, then trim the tail
            v = ir.reshape(value, value.shape[:d + 1] + (1,) + value.shape[d + 1:])
            widths = [(0, 0)] * len(v.shape)
            widths[d + 1] = (0, step - 1)
            v = ir.pad(v, widths)
            v = ir.reshape(v, value.shape[:d] + (n * step,) + value.shape[d + 1:])
            keep = [(0, s, 1) for s in v.shape]
            keep[d] = (0, (n - 1) * step + 1, 1)
            value = ir.shrink(v, keep)
    return ir.pad(value, [(start, s - start - vs) for (start, _, _), s, vs in zip(bounds, shape, value.shape)])
