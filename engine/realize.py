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
from .plan_cache import IN, OUT, VAR, PlanCache
from .lowering import device_key, lower as lower_for_device
from .launch import HostScalar, Launch, RandState, record, record_host_action, run_launch
from .schedule import schedule
from .storage import commit

__all__ = ["realize", "plan", "buffer_of", "bind_buffer", "Var", "write_storages", "record_host_action", "HostCopy"]

_vars: "weakref.WeakValueDictionary[int, Var]" = weakref.WeakValueDictionary()
_var_ids = itertools.count(1)


class Var(HostScalar):
    """A host scalar read at each launch (learning rate, Adam's bias correction...)."""
    __slots__ = ("id", "value", "dtype", "node", "__weakref__")

    def __init__(self, value, dtype="float32"):
        self.id, self.value, self.dtype = next(_var_ids), value, dtype
        self.node = ir.var(self.id, dtype)
        _vars[self.id] = self


class HostCopy:
    """A recorded buffer-to-buffer copy (a host action): its buffers are visible, so a
    replay that puts new buffers in a recorded step's place (an optimizer's update over
    new gradients) can put them here too."""
    __slots__ = ("device", "src", "dst")

    def __init__(self, device, src, dst):
        self.device, self.src, self.dst = device, src, dst

    def __call__(self):
        self.device.copy(self.src, self.dst, self.dst.nbytes)


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
            record_host_action(HostCopy(device, src, dst))
    todo = list(dict.fromkeys(r for r in resolved if r.op != "BUFFER"))
    out_of = _run_plan(todo, device, group, {computed_as(t): b for t, b in dests.items()}) if todo else {}
    result = []
    for t, r in zip(targets, resolved):
        buf = buffer_of(r) if r.op == "BUFFER" else out_of[r]
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


def _run_plan(todo, device, group, dests) -> dict:
    """Launch the plan of ``todo`` (distinct, uncomputed nodes); {target: its Buffer}.
    ``dests``: target -> the Buffer it is written into."""
    plan, nodes = _plans.get_or_plan(todo, _is_leaf, device, device_key(device), group, dests,
                                     lambda: _lower_and_schedule(todo, device, group, dests))
    if debug.level() >= 1:
        debug.on_schedule(plan.schedule_summary(), todo)
    if not plan.ready(device):
        _build(plan, device)
    kernels = plan.kernels
    # Memory plan: an intermediate's buffer goes back to a free list right after the last
    # kernel that reads it, and a later kernel of this schedule takes it from there (the
    # queue is in order, so the reuse is safe; a replayed step reuses it the same way).
    out_of: dict = {}
    into = {plan.values[k]: dests[t] for k, t in enumerate(todo) if t in dests}
    free: dict = {}
    for k in kernels:
        ck, spec = k.built[device]
        args, rand = [], None
        for role, s, nbytes in k.args:
            if role == OUT:
                buf = into.get(s) or (free.get(nbytes) or [None]).pop() or device.alloc(nbytes)
                out_of[s] = buf
                args.append(buf)
            elif role == IN:
                buf = out_of.get(s) or buffer_of(nodes[s])
                if buf is None:
                    raise RuntimeError(f"internal: no buffer for input {nodes[s]} of kernel {k.name}")
                args.append(buf)
            elif role == VAR:
                args.append(_vars[s])
            else:
                anchor = nodes[s]
                seed, offset = anchor.arg
                rand = RandState(seed, offset, anchor.numel)
                args.append(rand)
        launch = Launch(ck, k.global_size, k.local_size, args, rand, spec)
        run_launch(launch, device)
        record(launch)
        for s in k.frees:
            buf = out_of[s]
            free.setdefault(buf.nbytes, []).append(buf)
    return {t: out_of[s] for t, s in zip(todo, plan.values)}


def _build(plan, device) -> None:
    """Prove and build the kernels of ``plan`` for ``device`` (the first time it runs there)."""
    specs = [k.spec for k in plan.kernels if device not in k.built]
    _prove_once(specs)
    device.prebuild(specs)     # this schedule's new kernels compiled together, in parallel build children
    for k in plan.kernels:
        if device in k.built:
            continue
        ck = device.build(k.spec)
        debug.on_build(k.spec, device)
        # the kernel as built (a build-time fallback narrows it), unless it came from a bundle
        k.built[device] = (ck, ck.spec if ck.spec.template != "bundle" else k.spec)
    if plan.cacheable:
        for k in plan.kernels:
            k.spec = None       # the graph it was planned from need not stay alive


_plans = PlanCache()
_proved: set = set()     # _proof_key of every kernel whose loads are proved in bounds


def _proof_key(spec) -> tuple:
    """What a proof depends on: the kernel (its name hashes its source), its extent and the
    sizes of its buffers. The source alone is not enough: an elementwise kernel launched
    with exactly its length names no length (codegen), one source for every length."""
    return (spec.name, (spec.params or {}).get("numel"),
            tuple(a[1].numel for a in spec.args if a[0] in ("out", "in", "var")),
            tuple(o.numel for o in spec.outputs))


def _prove_once(specs) -> None:
    """Every generated load of each spec inside its buffer, before anything is built."""
    for spec in specs:
        key = _proof_key(spec)
        if key not in _proved:
            prove(spec)
            _proved.add(key)


def plan(targets, device, group=False):
    """Lower ``targets`` for ``device`` (engine/lowering.py), schedule them and lower each
    kernel, without building or launching: [(group, spec)]."""
    resolved = list(dict.fromkeys(r for r in (computed_as(t) for t in targets) if r.op != "BUFFER"))
    return _lower_and_schedule(resolved, device, group)[1] if resolved else []


def expect(targets, device, group=False) -> None:
    """Kernels that computing ``targets`` will need soon (an optimizer's update, before its
    first step): planned now, their loads proved in bounds, and handed to the device, which
    compiles them with the next schedule's new kernels (Device.prebuild). Nothing runs."""
    specs = [spec for _, spec in plan(targets, device, group)]
    _prove_once(specs)
    device.expect(specs)


def _lower_and_schedule(resolved, device, group, dests=frozenset()):
    """({target: its node in the device's graph}, [(group, spec)]). A target whose device
    node is a reshape of a computed value (a split-K sum) is that value, in its memory,
    unless it is written into a given buffer (``dests``)."""
    on_device = {}
    for r, d in zip(resolved, lower_for_device(resolved, device, _is_leaf)):
        while d.op == "RESHAPE" and d is not r and r not in dests and not _is_leaf(d.srcs[0]):
            d = d.srcs[0]
        on_device[r] = d
    targets = list(dict.fromkeys(on_device.values()))
    groups = _schedule(targets, group)
    materialized = {o for g in groups for o in g.outputs}
    return on_device, [(g, lower(g, _is_leaf, materialized.__contains__, device.kind)) for g in groups]


def _schedule(targets, group):
    """The scheduler groups same-shaped elementwise targets only when all targets have one
    shape; an optimizer writes every shape's update in one realize (so a cold start builds
    their kernels together), so targets of several shapes are scheduled shape by shape,
    one kernel each, when their graphs share no computed node (a shared one would be
    computed once per shape, a shared random draw drawn twice).  A shared scalar computed
    by elementwise ops (an optimizer's found_inf test) is cheap to compute in each kernel
    and does not count."""
    if group:
        by_shape: dict = {}
        for t in targets:
            by_shape.setdefault(t.shape, []).append(t)
        if len(by_shape) > 1:
            tset, seen = set(targets), set()
            stop = lambda n: n not in tset and _is_leaf(n)      # noqa: E731
            for part in by_shape.values():
                inner = {n for n in ir.toposort(part, stop=stop) if not stop(n) and n.op not in ir.MOVEMENT
                         and n.op not in ("CONST", "VAR") and not (n.shape == () and n.op in ir.ELEMENTWISE)}
                if inner & seen:
                    break
                seen |= inner
            else:
                return [g for part in by_shape.values() for g in schedule(part, _is_leaf, group=True)]
    return schedule(targets, _is_leaf, group=group)


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
        record_host_action(HostCopy(device, a, b))
    return scratch
