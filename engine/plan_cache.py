"""Plans remembered by the structure of the graph they came from, ready to run again.

A plain (uncompiled) training loop builds the same graph every step, only over other
buffers. Lowering for the device, scheduling, rendering templates and even re-targeting
the kernels' descriptions at the new nodes cost far more than walking the graph once, so
the device-neutral graph's *structure* (ops, args, shapes, dtypes, edges, which nodes are
already computed, which targets are written into given buffers, and the device key the
lowering depends on) is the key, and a hit hands back a ``Plan`` that runs over the new
graph's nodes directly.

A ``Plan`` names every node its kernels touch by a *slot*: a slot below ``walk`` is the
position of a node in the walk of the graph (on a hit, the new graph's node there); a slot
from ``walk`` on is an intermediate the lowering or the scheduler made (GEMM panels, a
split-K partial product), which exists only as a buffer while the plan runs. RAND seeds
and buffer identities are launch arguments, not structure.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

from . import ir

__all__ = ["PlanCache", "Plan", "PlannedKernel", "OUT", "IN", "VAR", "SEED"]

OUT, IN, VAR, SEED = range(4)      # argument roles of a planned kernel
_ROLES = {"out": OUT, "in": IN, "var": VAR, "seed": SEED}


class PlannedKernel:
    """One kernel of a plan. ``args``: (role, slot or VAR id, bytes of an output) per
    launch argument; ``frees``: slots whose buffers go back to the plan's free list after
    this kernel (it is their last reader); ``built``: device -> (compiled kernel, the spec
    its launches report), filled the first time the kernel runs on a device; ``spec``: the
    KernelSpec it was planned from, kept only until it is built."""
    __slots__ = ("name", "global_size", "local_size", "args", "frees", "built", "spec", "summary")

    def __init__(self, spec, args, summary):
        self.name, self.global_size, self.local_size = spec.name, spec.global_size, spec.local_size
        self.args, self.frees, self.built, self.spec, self.summary = args, (), {}, spec, summary


class Plan:
    """The kernels that compute a realize's targets, over slots (see the module docstring).
    ``values[k]`` is the slot holding target k's value; ``walk`` the number of walk slots;
    ``cacheable`` False when a kernel reads a node the walk does not reach (then the plan
    runs once and is not remembered)."""
    __slots__ = ("kernels", "values", "walk", "cacheable")

    def ready(self, device) -> bool:
        """Every kernel built for ``device``."""
        return all(device in k.built for k in self.kernels)

    def buildable(self, device) -> bool:
        """Every kernel built for ``device`` or still holding the spec to build it from."""
        return all(device in k.built or k.spec is not None for k in self.kernels)

    def schedule_summary(self) -> list:
        """[(group, spec)] stand-ins for ``debug.on_schedule``: names, templates, sizes and
        the fused ops, without any graph's nodes."""
        return [(None, k.summary) for k in self.kernels]


class _Op:
    """A fused node's op name, standing in for the node in a remembered spec."""
    __slots__ = ("op",)

    def __init__(self, op):
        self.op = op


class PlanCache:
    def __init__(self, capacity: int = 1024):
        self.capacity = capacity
        self._entries: "OrderedDict[tuple, Plan]" = OrderedDict()
        self.hits = self.misses = 0

    def get_or_plan(self, targets, is_leaf, device, device_key, group, dests, make):
        """(plan, nodes): ``nodes[slot]`` is this graph's node at each slot. On a miss
        ``make()`` -> ({target: its node in the device's graph}, [(KernelGroup, KernelSpec)])
        is planned and remembered. ``device_key``: what the plan depends on besides the
        graph (lowering.device_key); ``dests``: the targets written into given buffers."""
        key, order = _signature(targets, is_leaf, device_key, group, dests)
        plan = self._entries.get(key)
        # another device of the same key needs the specs, which a built plan let go
        if plan is not None and plan.buildable(device):
            self._entries.move_to_end(key)
            self.hits += 1
            return plan, order
        self.misses += 1
        on_device, lowered = make()
        plan, nodes = abstract(order, [on_device[t] for t in targets], lowered)
        if plan.cacheable:
            self._entries[key] = plan
            if len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return plan, nodes


def _signature(targets, is_leaf, device_key, group, dests):
    # one walk (ir.toposort's order: sources first, depth first from each target) that
    # also writes each node's part of the key as it is placed, since this runs for every
    # realize of a plain loop
    tset = set(targets)
    order, index, parts, seen = [], {}, [], set()
    for root in targets:
        stack = [(root, 0)]
        while stack:
            n, state = stack.pop()
            if state:           # 1: computed here, 2: a leaf (a buffer, constant or host scalar)
                index[n] = len(order)
                order.append(n)
                if state == 2:
                    parts.append(("leaf", n.op, n.shape, n.dtype, n.arg if n.op in ("CONST", "VAR") else None))
                else:
                    parts.append((n.op, None if n.op == "RAND" else n.arg, n.shape, n.dtype,
                                  tuple([index[s] for s in n.srcs])))
                continue
            if n in seen:
                continue
            seen.add(n)
            if n not in tset and is_leaf(n):    # asked once per node (it looks into weak dictionaries)
                stack.append((n, 2))
            else:
                stack.append((n, 1))
                stack.extend([(s, 0) for s in reversed(n.srcs) if s not in seen])
    return (device_key, group, tuple([index[t] for t in targets]), tuple([i for i, t in enumerate(targets) if t in dests]),
            tuple(parts)), order


def abstract(order, values, lowered):
    """(Plan, nodes) of ``lowered`` = [(group, spec)], whose values of the targets are the
    device nodes ``values``, over the walk ``order``."""
    index = {n: i for i, n in enumerate(order)}
    nodes = list(order)
    walk = len(order)

    def slot(n):
        i = index.get(n)
        if i is None:
            i = index[n] = len(nodes)
            nodes.append(n)
        return i

    plan = Plan()
    plan.walk, plan.cacheable, plan.kernels = walk, True, []
    produced, last_read = set(), {}
    for k, (g, spec) in enumerate(lowered):
        args = []
        for a in spec.args:
            role = _ROLES.get(a[0])
            if role == OUT:
                s = slot(a[1])
                produced.add(s)
                args.append((OUT, s, a[1].nbytes))
            elif role == IN:
                s = slot(a[1])
                if s >= walk and s not in produced:
                    plan.cacheable = False     # a node the walk does not reach, read from its buffer
                last_read[s] = k
                args.append((IN, s, 0))
            elif role == VAR:
                args.append((VAR, a[1].arg, 0))
            elif role == SEED:
                s = slot(g.anchor)
                plan.cacheable = plan.cacheable and s < walk
                args.append((SEED, s, 0))
        summary = replace(spec, params={}, args=(), outputs=(), fused=tuple(_Op(n.op) for n in spec.fused))
        plan.kernels.append(PlannedKernel(spec, tuple(args), summary))
    plan.values = tuple(slot(v) for v in values)
    keep = set(plan.values)
    frees = {}
    for s, k in last_read.items():
        if s in produced and s not in keep:
            frees.setdefault(k, []).append(s)
    for k, kernel in enumerate(plan.kernels):
        kernel.frees = tuple(frees.get(k, ()))
    return plan, nodes
