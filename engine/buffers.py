"""The buffer registry: which device buffer holds the value of which IR node.

A BUFFER node owns its device buffer for as long as any graph or tensor holds the node.
A computed node maps to the BUFFER node holding its value, so a value that is still in
memory is never recomputed. Both maps are weak in their keys: a node nobody holds takes
its entries with it.
"""
from __future__ import annotations

import weakref

from . import ir

__all__ = ["bind_buffer", "buffer_of", "has_buffer", "remember", "computed_as", "is_leaf", "note_range",
           "known_range"]

_buffers: "weakref.WeakKeyDictionary[ir.Node, object]" = weakref.WeakKeyDictionary()
_computed: "weakref.WeakKeyDictionary[ir.Node, ir.Node]" = weakref.WeakKeyDictionary()
_ranges: "weakref.WeakKeyDictionary[ir.Node, tuple]" = weakref.WeakKeyDictionary()


def bind_buffer(node: ir.Node, buf) -> None:
    _buffers[node] = buf


def has_buffer(node: ir.Node) -> bool:
    return node in _buffers


def buffer_of(node: ir.Node):
    """The Buffer holding ``node``'s value (None when it has not been computed)."""
    return _buffers.get(_computed.get(node, node))


def remember(node: ir.Node, result: ir.Node) -> None:
    """``node`` was computed into the BUFFER node ``result``."""
    _computed[node] = result


def computed_as(node: ir.Node) -> ir.Node:
    """The BUFFER node holding ``node``'s value, or ``node`` itself when not computed."""
    return _computed.get(node, node)


def is_leaf(n: ir.Node) -> bool:
    """Already has a value a kernel can read (a buffer, a constant or a host scalar)."""
    return n.op in ("BUFFER", "CONST", "VAR") or n in _computed


def note_range(node: ir.Node, bounds) -> None:
    """The smallest and largest value of the integer BUFFER ``node``, known on the host
    from the data uploaded into it (None: unknown). A BUFFER node's value never changes
    (an in-place write gives the storage a new node), except a compiled step's input,
    whose buffer each replay overwrites: the replay notes the new data's range."""
    if bounds is None:
        _ranges.pop(node, None)
    else:
        _ranges[node] = bounds


def known_range(node: ir.Node):
    """(min, max) of ``node``'s values when known on the host without a download, else None."""
    return _ranges.get(node)
