"""Turning lazy IR into buffers: schedule, lower, build, launch, with a memory plan that
reuses intermediates' buffers inside one schedule; in-place writes into storages. The
launches themselves (and their capture for ``engine.compile``) are in ``launch.py``.
"""
from __future__ import annotations

import itertools
import weakref


from . import debug, ir
from .bounds import prove
from .buffers import bind_buffer, buffer_of, computed_as, is_leaf as _is_leaf, remember
from .codegen import lower
from .plan_cache import PlanCache
from .lowering import device_key, lower as lower_for_device
from .launch import HostScalar, Launch, RandState, record, record_host_action, run_launch
from .schedule import schedule
from .storage import commit

__all__ = ["realize", "plan", "buffer_of", "bind_buffer", "Var", "write_storages", "record_host_action"]

_vars: "weakref.WeakValueDictionary[int, Var]" = weakref.WeakValueDictionary()
_var_ids = itertools.count(1)


class Var(HostScalar):
    """A host scalar read at each launch (learning rate, Adam's bias correction...)."""
    __slots__ = ("id", "value", "dtype", "node", "__weakref__")

    def __init__(self, value, dtype="float32"):
        self.id, self.value, self.dtype = next(_var_ids), value, dtype
        self.node = ir.var(self.id, dtype)
        _vars[self.id] = self


def realize(targets, device, dests=None, group=False) -> list:
    """Compute ``targets`` on ``device``; returns their BUFFER nodes. ``dests`` maps a
    target to an existing Buffer to write into (in-place update of a parameter)."""
    dests = dests or {}
    dests_in = set(dests)
    resolved = []
    for t in targets:
        r = computed_as(t)
        if r.op == "RESHAPE" and t not in dests:
            # a reshape of a contiguous result is the same memory: compute the source only
            while r.op == "RESHAPE":
                r = r.srcs[0]
            r = computed_as(r)
        resolved.append(r)
    for t, r in zip(targets, resolved):
        if r.op == "BUFFER" and t in dests:   # assigning an existing value: a plain copy
            src, dst = buffer_of(r), dests[t]
            record_host_action(lambda src=src, dst=dst: device.copy(src, dst, dst.nbytes))
    todo = [r for r in resolved if r.op != "BUFFER"]
    on_device, lowered = _plan(todo, device, group, {computed_as(t) for t in dests_in})
    dests = {on_device.get(r, r): b for r, b in ((computed_as(t), b) for t, b in dests.items())}
    debug.on_schedule(lowered, list(on_device.values()))
    groups = [g for g, _ in lowered]
    specs = [spec for _, spec in lowered]
    out_of: dict = {}
    # Memory plan: an intermediate's buffer goes back to a free list right after the last
    # kernel that reads it, and a later kernel of this schedule takes it from there (the
    # queue is in order, so the reuse is safe; a replayed step reuses it the same way).
    last_read = {}
    for i, spec in enumerate(specs):
        for a in spec.args:
            if a[0] == "in":
                last_read[a[1]] = i
    keep = {on_device.get(r, r) for r in resolved}
    free: dict = {}
    for spec in specs:
        if spec.name not in _proved:
            prove(spec)        # every generated load inside its buffer, before anything is built
            _proved.add(spec.name)
    device.prebuild(specs)     # this schedule's new kernels compiled together, in parallel build children
    for i, (g, spec) in enumerate(zip(groups, specs)):
        ck = device.build(spec)
        debug.on_build(spec, device)
        args, rand = [], None
        for a in spec.args:
            role = a[0]
            if role == "out":
                n = a[1]
                nbytes = n.nbytes
                buf = dests.get(n) or (free.get(nbytes) or [None]).pop() or device.alloc(nbytes)
                out_of[n] = buf
                args.append(buf)
            elif role == "in":
                n = a[1]
                buf = out_of.get(n) or buffer_of(n)
                if buf is None:
                    raise RuntimeError(f"internal: no buffer for input {n} of kernel {spec.name}")
                args.append(buf)
            elif role == "var":
                args.append(_vars[a[1].arg])
            elif role == "seed":
                seed, offset = g.anchor.arg
                rand = RandState(seed, offset, g.anchor.numel)
                args.append(rand)
        # the kernel as built (a build-time fallback narrows it), unless it came from a bundle
        launch = Launch(ck, spec.global_size, spec.local_size, args, rand,
                        ck.spec if ck.spec.template != "bundle" else spec)
        run_launch(launch, device)
        record(launch)
        for a in spec.args:
            n = a[1] if a[0] == "in" else None
            if n in out_of and last_read.get(n) == i and n not in keep and n not in dests:
                free.setdefault(out_of[n].nbytes, []).append(out_of[n])
    result = []
    for t, r in zip(targets, resolved):
        buf = buffer_of(r) if r.op == "BUFFER" else out_of[on_device[r]]
        if r.op == "BUFFER" and r.shape == t.shape:
            result.append(r)
            continue
        bn = ir.buffer(t.shape, t.dtype)
        bind_buffer(bn, buf)
        if t not in dests_in:
            # a value written into a scratch buffer for an in-place commit is not kept
            # under its expression: the scratch's memory changes owner at the commit
            remember(t, bn)
            if r is not t and r.op != "BUFFER":
                rn = ir.buffer(r.shape, r.dtype)
                bind_buffer(rn, buf)
                remember(r, rn)
        result.append(bn)
    return result


_plans = PlanCache()
_proved: set = set()     # kernel names (their source hash included) whose loads are proved in bounds


def plan(targets, device, group=False):
    """Lower ``targets`` for ``device`` (engine/lowering.py), schedule them and lower each
    kernel, without building or launching: [(group, spec)]."""
    resolved = [r for r in (computed_as(t) for t in targets) if r.op != "BUFFER"]
    return _plan(resolved, device, group)[1]


def _plan(resolved, device, group, dests=frozenset()):
    """({target: its node in the device's graph}, [(group, spec)]). A target whose device
    node is a reshape of a computed value (a split-K sum) is that value, in its memory,
    unless it is written into a given buffer (``dests``)."""
    on_device = {}
    for r, d in zip(resolved, lower_for_device(resolved, device, _is_leaf)):
        while d.op == "RESHAPE" and d is not r and r not in dests and not _is_leaf(d.srcs[0]):
            d = d.srcs[0]
        on_device[r] = d
    targets = list(dict.fromkeys(on_device.values()))
    kind = device.kind

    def make():
        groups = schedule(targets, _is_leaf, group=group)
        materialized = {o for g in groups for o in g.outputs}
        return [(g, lower(g, _is_leaf, materialized.__contains__, kind)) for g in groups]
    return on_device, (_plans.get_or_plan(targets, _is_leaf, device_key(device), group, make) if targets else [])


def write_storages(pairs, device, group=False) -> None:
    """In-place writes: each ``(storage, value_node)`` of a realized storage gets the
    value, computed in one schedule (``group``: same-shaped values share a kernel) into
    scratch buffers, then committed (see ``storage.commit``). The commit is a host action,
    so a replayed compiled step swaps the same buffers again."""
    scratch = _compute_into_scratch([v for _, v in pairs], device, group)
    storages = [s for s, _ in pairs]
    pairs.clear()   # the value graphs must not keep the old versions alive at the commit
    for s, buf in zip(storages, scratch):
        record_host_action(lambda s=s, buf=buf: commit(s, buf))


def _compute_into_scratch(values, device, group):
    scratch, dests, twins = [], {}, []
    for v in values:
        buf = device.alloc(v.nbytes)
        if v in dests:      # the same value for two storages: computed once, copied
            twins.append((dests[v], buf))
        else:
            dests[v] = buf
        scratch.append(buf)
    realize(list(dests), device, dests=dests, group=group)
    for a, b in twins:
        record_host_action(lambda a=a, b=b: device.copy(a, b, b.nbytes))
    return scratch
