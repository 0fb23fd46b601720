"""Schedules and lowered kernels remembered by the structure of the graph they came from.

A plain (uncompiled) training loop builds the same graph every step, only over other
buffers. Scheduling, lowering and rendering templates cost far more than walking the
graph once, so a graph's *structure* (ops, args, shapes, dtypes, edges, and which nodes
are already computed) is the key, and a hit re-targets the remembered kernels at the new
graph's nodes. RAND seeds and buffer identities are launch arguments, not structure.
The graph is the one lowered for the device (engine/lowering.py), so its GEMM nodes carry
the tiles, variants and split-K the lowering chose; the key adds the device itself
(``lowering.device_key``: kind, identity, compute units), which codegen also reads.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

from . import ir
from .schedule import KernelGroup

__all__ = ["PlanCache"]


class PlanCache:
    def __init__(self, capacity: int = 1024):
        self.capacity = capacity
        self._entries: "OrderedDict[tuple, list]" = OrderedDict()
        self.hits = self.misses = 0

    def get_or_plan(self, targets, is_leaf, device_key, group, make):
        """``make()`` -> [(KernelGroup, KernelSpec)] on a miss; the same for ``targets`` on a hit.
        ``device_key``: what the plan depends on besides the graph (lowering.device_key)."""
        key, order = _signature(targets, is_leaf, device_key, group)
        cached = self._entries.get(key)
        if cached is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return [(_retarget_group(g, order), _retarget_spec(s, order)) for g, s in cached]
        self.misses += 1
        lowered = make()
        index = {n: i for i, n in enumerate(order)}
        try:
            self._entries[key] = [(_abstract_group(g, index), _abstract_spec(s, index)) for g, s in lowered]
        except KeyError:      # a kernel touches a node outside the walk: do not remember it
            return lowered
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return lowered


def _signature(targets, is_leaf, device_key, group):
    tset = set(targets)
    stop = lambda n: n not in tset and is_leaf(n)  # noqa: E731  (a target is always computed)
    order = ir.toposort(targets, stop=stop)
    index = {n: i for i, n in enumerate(order)}
    parts = []
    for n in order:
        if stop(n):
            parts.append(("leaf", n.op, n.shape, n.dtype, n.arg if n.op in ("CONST", "VAR") else None))
        else:
            arg = None if n.op == "RAND" else n.arg
            parts.append((n.op, arg, n.shape, n.dtype, tuple(index[s] for s in n.srcs)))
    return (device_key, group, tuple(index[t] for t in targets), tuple(parts)), order


class _Slot:
    """A node's position in the walk, standing in for the node in a remembered plan."""
    __slots__ = ("i",)

    def __init__(self, i):
        self.i = i


def _abstract_group(g, index):
    return replace(g, outputs=tuple(_Slot(index[n]) for n in g.outputs),
                   anchor=None if g.anchor is None else _Slot(index[g.anchor]),
                   fused=tuple(_Slot(index[n]) for n in g.fused))


def _abstract_spec(s, index):
    args = tuple((a[0], _Slot(index[a[1]])) + tuple(a[2:]) if len(a) > 1 and isinstance(a[1], ir.Node) else a
                 for a in s.args)
    return replace(s, args=args, outputs=tuple(_Slot(index[n]) for n in s.outputs),
                   fused=tuple(_Slot(index[n]) for n in s.fused))


def _retarget_group(g, order) -> KernelGroup:
    return replace(g, outputs=tuple(order[x.i] for x in g.outputs),
                   anchor=None if g.anchor is None else order[g.anchor.i],
                   fused=tuple(order[x.i] for x in g.fused))


def _retarget_spec(s, order):
    args = tuple((a[0], order[a[1].i]) + tuple(a[2:]) if len(a) > 1 and isinstance(a[1], _Slot) else a
                 for a in s.args)
    return replace(s, args=args, outputs=tuple(order[x.i] for x in s.outputs),
                   fused=tuple(order[x.i] for x in s.fused))
