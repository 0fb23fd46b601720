"""Optimizers. Each parameter's update is one fused kernel that writes the parameter and
its state buffers in place (new storage versions, see engine/storage.py), with the
learning rate and step-dependent factors passed as scalar arguments, one set per
parameter (so changing them never recompiles, and a compiled step replays them).
Formulas are torch's; ``param_groups`` work as in torch (a list of dicts with their own
options), which is what ``engine.lr_scheduler`` changes. Steps are counted per parameter,
as torch does: a parameter without a gradient in a step keeps its count (and its bias
correction); ``state_dict`` holds each count as torch's ``state[i]["step"]``.
"""
from __future__ import annotations

import math

import numpy as np

from . import lr_scheduler  # noqa: F401  (engine.optim.lr_scheduler, as torch.optim.lr_scheduler)
from . import ir, launch, realize as rz
from .buffers import buffer_of, computed_as
from .tensor import Tensor, tensor, no_grad, realize_all

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "lr_scheduler"]


class Optimizer:
    # options that reach the update only through host scalars (Vars, set by _set_scalars at
    # each step), so changing them keeps a recorded update; a subclass that bakes an option
    # into its update graph must not list it (the base lists none: any change records again)
    host_options: tuple = ()

    def __init__(self, params, defaults: dict):
        self._defaults = dict(defaults)
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups: list = []
        self.params: list = []
        self.state: dict = {}
        self._group_of: list = []
        self._vars: dict = {}
        self._replay = None       # the last update's launches, replayed while nothing changed
        self._steps: list = []    # per parameter: the steps that updated it (torch's state[i]["step"])
        self._step_count = 0      # step() calls
        self._announced = False   # the update kernels handed to the device ahead of the first step
        self._planning = False    # planning them: state is stood in for, never created
        # a one-element int32 tensor, or None: while it holds a nonzero value, step() leaves
        # every parameter and state as they are, decided on the device with no read-back
        # (torch's fused optimizers take a `found_inf` the same way).  Its host counters
        # still advance: whoever sets it rewinds them (step_count) when a step is refused.
        self.found_inf = None
        for g in groups:
            self.add_param_group(g)

    @property
    def step_count(self) -> int:
        """How many times ``step()`` ran. Setting it sets every parameter's own count too
        (restoring a snapshot in which every parameter took every step)."""
        return self._step_count

    @step_count.setter
    def step_count(self, n):
        self._step_count = int(n)
        self._steps = [int(n)] * len(self.params)
        for i in range(len(self.params)):
            self._set_scalars(i, self.param_groups[self._group_of[i]], max(int(n), 1))

    @property
    def defaults(self) -> dict:
        return dict(self._defaults)

    def add_param_group(self, group: dict):
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError("a parameter group is a dict with a 'params' list")
        params = [group["params"]] if isinstance(group["params"], Tensor) else list(group["params"])
        unknown = set(group) - set(self._defaults) - {"params", "initial_lr"}
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown options {sorted(unknown)} in a parameter group")
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer parameters must be Tensors, got {type(p).__name__}")
            if any(p is q for q in self.params):
                raise ValueError("some parameters appear in more than one parameter group")
        g = dict(self._defaults, **{k: v for k, v in group.items() if k != "params"}, params=params)
        gi = len(self.param_groups)
        self.param_groups.append(g)
        for p in params:
            i = len(self.params)
            self.state[i] = {}
            self.params.append(p)
            self._group_of.append(gi)
            self._steps.append(0)
            self._set_scalars(i, g, 1)

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None
        if not self._announced:
            self._announced = True
            self._announce_update_kernels()

    def _announce_update_kernels(self):
        """Before the first step: the update kernels, planned on stand-ins for the gradients
        and the state (nothing allocated, stored or run) and handed to each device, which
        builds them with the backward pass's new kernels (realize.expect): a cold start then
        compiles one round of kernels, not a second one for the update alone. Only a hint:
        whatever it misses, the step builds as before. Only for this module's own updates: a
        subclass's ``_update`` may count its calls or keep host state."""
        if type(self)._update.__module__ != __name__:
            return
        stand_in = lambda t: Tensor(ir.buffer(t.shape, t.dtype), t.device)     # noqa: E731
        values: dict = {}
        self._planning = True
        try:
            with no_grad():
                for i, p in enumerate(self.params):
                    if p.requires_grad and not p._view and p._storage.realized:
                        gi = self._group_of[i]
                        pairs = self._update(i, p, stand_in(p), self.param_groups[gi], gi)
                        values.setdefault(p.device, []).extend(v.node for _, v in pairs)
            for device, nodes in values.items():
                rz.expect(nodes, device, group=True)
        except Exception:   # noqa: BLE001  (a hint that failed: the step reports any real error itself)
            pass
        finally:
            self._planning = False

    def _var(self, i, name) -> Tensor:
        """Parameter ``i``'s scalar ``name`` as a tensor read from the host at each launch."""
        key = (i, name)
        if key not in self._vars:
            self._vars[key] = rz.Var(0.0)
        return Tensor(self._vars[key].node, self.params[i].device)

    def _set(self, i, **values):
        for name, value in values.items():
            key = (i, name)
            if key not in self._vars:
                self._vars[key] = rz.Var(0.0)
            self._vars[key].value = float(value)

    def _buffer(self, i, name) -> Tensor:
        st = self.state[i]
        if name not in st:
            p = self.params[i]
            if self._planning:      # _announce_update_kernels: the state's shape, not the state
                return Tensor(ir.buffer(p.shape, "float32"), p.device)
            st[name] = tensor(np.zeros(p.shape, np.float32), device=p.device)
        return st[name]

    def step(self):
        grads = [p.grad for p in self.params]
        realize_all(*grads)
        active = tuple(i for i, g in enumerate(grads) if g is not None)
        rz.record_host_action(lambda: self._advance(active))
        if launch.capturing():      # engine.compile records this step's launches itself
            self._replay = None
            self._update_all()
            return
        replay = self._replay
        key = _UpdateReplay.key_of(self)
        if replay is not None and key is not None and replay.matches(key):
            replay.run(key)
            return
        # recorded only when everything was in its buffer before: realizing a lazy parameter
        # or state inside the update would be recorded too, and must not be replayed
        with launch.capture() as cap:
            self._update_all()
        after = _UpdateReplay.key_of(self) if key is not None else None
        replay = _UpdateReplay(after, cap.items) if after is not None else None
        self._replay = replay if replay is not None and replay.replayable else None

    def _update_all(self):
        with no_grad():
            # parameters of one shape (and device) are updated by one kernel: the scheduler
            # fuses same-shaped in-place writes, and their plan is one cache lookup
            # All shapes' updates are one realize: one plan lookup, and at a cold start
            # their kernels are built together (Device.prebuild groups a realize's kernels).
            updates: dict = {}      # device -> [(tensor, new value)]
            for i, p in enumerate(self.params):
                if p.grad is None:
                    continue
                gi = self._group_of[i]
                pairs = self._update(i, p, p.grad, self.param_groups[gi], gi)
                updates.setdefault(p.device, []).extend(_gated(pairs, self.found_inf))
            for device in list(updates):
                self._write(updates.pop(device), device)

    @staticmethod
    def _write(updates, device):
        """One schedule writes every new value (same-shaped ones in one fused kernel); each tensor's storage
        takes its value in place (a new version), so nothing computed from the old values
        is reused."""
        pairs = []
        for t, new in updates:
            if t._view:
                raise RuntimeError("optimizer: a parameter or state tensor is a view; pass the base tensor")
            if not t._storage.realized:
                t.realize()
            pairs.append((t._storage, new.node))
        updates.clear()     # the value graphs must not keep the old versions alive at the commit
        rz.write_storages(pairs, device, group=True)

    def _advance(self, active):
        """One step on the host: count it for the optimizer and for each parameter in
        ``active`` (those with a gradient), and set their scalars. A replayed compiled step
        runs this too, so counters, schedules and bias corrections keep advancing."""
        self._step_count += 1
        steps, groups, group_of = self._steps, self.param_groups, self._group_of
        for i in active:
            steps[i] += 1
            self._set_scalars(i, groups[group_of[i]], steps[i])

    def _set_scalars(self, i, group, t):
        """Parameter ``i``'s host scalars for its ``t``-th step (t >= 1)."""
        raise NotImplementedError

    def _update(self, i, p, g, group, gi):
        raise NotImplementedError

    # torch keeps a step count in each parameter's state (SGD keeps none)
    _state_step = True

    def state_dict(self) -> dict:
        state = {}
        for i, st in self.state.items():
            if st or (self._state_step and self._steps[i]):
                state[i] = {k: v.numpy() for k, v in st.items()}
                if self._state_step:
                    state[i] = {"step": np.asarray(self._steps[i], np.float32)} | state[i]
        groups, first = [], 0
        for g in self.param_groups:
            n = len(g["params"])
            groups.append({k: v for k, v in g.items() if k != "params"} |
                          {"params": list(range(first, first + n)), "step_count": self.step_count})
            first += n
        return {"param_groups": groups, "state": state}

    def load_state_dict(self, sd: dict):
        groups = sd["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"load_state_dict: the state has {len(groups)} parameter groups, "
                             f"this optimizer {len(self.param_groups)}")
        count = None
        for g, saved in zip(self.param_groups, groups):
            saved = dict(saved)
            if "step_count" in saved:
                count = int(saved.pop("step_count"))
            saved.pop("params", None)
            g.update(saved)
        states = {int(i): st for i, st in sd.get("state", {}).items()}
        steps = [0] * len(self.params)
        for i, st in states.items():
            if not 0 <= i < len(self.params):
                raise ValueError(f"load_state_dict: state for parameter {i}, but there are {len(self.params)}")
            # torch's per-parameter count; an older engine state has only the optimizer's, and
            # torch's SGD none (a momentum buffer there means at least one step was taken)
            if "step" in st:
                steps[i] = int(float(np.asarray(st["step"])))
            else:
                steps[i] = count if count is not None else (1 if st else 0)
        self._steps = steps
        self._step_count = count if count is not None else max(steps, default=0)
        for i, st in states.items():
            for k, v in st.items():
                if k == "step":
                    continue
                arr = np.asarray(v, np.float32)
                if arr.shape != self.params[i].shape:
                    raise ValueError(f"load_state_dict: state {k!r} of parameter {i} has shape {arr.shape}, "
                                     f"the parameter {self.params[i].shape}")
                self._buffer(i, k).assign_(tensor(arr, device=self.params[i].device))
        for i in range(len(self.params)):
            self._set_scalars(i, self.param_groups[self._group_of[i]], max(self._steps[i], 1))


def _gated(pairs, found_inf) -> list:
    """(tensor, new value) pairs that keep the old value while found_inf is nonzero (read
    on the device by the update kernel itself: a select, so a NaN in the new value cannot
    leak through as it would through a multiply)."""
    if found_inf is None:
        return pairs
    if found_inf.numel() != 1 or found_inf.dtype != "int32":
        raise ValueError(f"found_inf must be a one-element int32 tensor, got {found_inf.dtype}{list(found_inf.shape)}")
    keep = found_inf.reshape(()).eq(0)
    return [(t, keep.where_(new, t)) for t, new in pairs]


class _UpdateReplay:
    """An optimizer update replayed over new gradients: a plain training loop updates the
    same parameters and state, with the same options, from gradients in new buffers every
    step, so the update's launches and in-place commits are recorded once (as a compiled
    step records them) and later steps run them again with the new gradient buffers in
    their argument slots: no update graph, schedule or plan lookup. The key says what the
    recorded launches depend on: which parameters have gradients (shapes, dtypes), the
    storages of parameters and state and the device buffer handles they keep across
    in-place commits, and every group option except those read from the host at each
    launch (``host_options``: the learning rate). Anything else changed: record again."""
    __slots__ = ("key", "items", "device", "slots", "replayable")

    def __init__(self, key, items):
        fixed, handles, grads, device = key
        self.key, self.items, self.device = key, items, device
        where = {}
        for k, g in enumerate(grads):
            if g is not None:
                where.setdefault(id(g), []).append(k)
        self.slots = []             # (launch or copy, argument index or None for a copy's source, gradient index)
        # what the recording reads must be a gradient, a parameter's or state's buffer, or
        # something it wrote itself: anything else (a tensor a custom rule reads) may be
        # gone or changed by the next step, and then the update is not replayed
        known = {id(h) for h in handles} | {id(b) for b in grads if b is not None}
        self.replayable = True
        for it in items:
            if isinstance(it, launch.Launch):
                roles = [a[0] for a in it.spec.args if a[0] in ("out", "in", "var", "seed")]
                self.replayable = self.replayable and len(roles) == len(it.args)
                for j, (role, a) in enumerate(zip(roles, it.args)):
                    if role == "out":
                        known.add(id(a))
                    elif role == "in":
                        self.replayable = self.replayable and id(a) in known
                        if id(a) in where:
                            self.slots.append((it, j, where[id(a)][0]))
            elif isinstance(it, rz.HostCopy):
                self.replayable = self.replayable and id(it.src) in known
                known.add(id(it.dst))
                if id(it.src) in where:
                    self.slots.append((it, None, where[id(it.src)][0]))

    @staticmethod
    def key_of(opt):
        """(fixed structure, buffer handles, gradient buffers, device), or None when the
        update cannot be replayed (a gradient, parameter or state not computed into a
        buffer of its own, a parameter or state that is a view, or parameters on several
        devices)."""
        cls = type(opt)
        if cls._update.__module__ != __name__ or cls._set_scalars.__module__ != __name__:
            return None     # a custom update may read state this key does not cover
        fixed, handles, grads, devices = [], [], [], set()
        for i, p in enumerate(opt.params):
            g = p.grad
            if g is None:
                fixed.append(None)
                grads.append(None)
                continue
            gn = g.node        # a gradient may be a view, computed into a buffer of its own
            if p._view or p._storage.node.op != "BUFFER" or computed_as(gn).op != "BUFFER":
                return None
            state = opt.state[i]
            storages = [p._storage] + [t._storage for t in state.values()]
            if any(t._view or t._storage.node.op != "BUFFER" for t in state.values()):
                return None
            handles.extend(buffer_of(st.node) for st in storages)
            grads.append(buffer_of(gn))
            fixed.append((g.shape, g.dtype, tuple(state), tuple(storages)))
            devices.add(p.device)
        if len(devices) != 1 or any(h is None for h in handles):
            return None
        # storages sharing one buffer (parameters made from one lazy value) part at their
        # commits, and a gradient that is a parameter's or state's memory, or another's
        # gradient, cannot be told apart from it in the recorded launches' arguments
        present = [id(b) for b in grads if b is not None] + [id(h) for h in handles]
        if len(set(present)) != len(present):
            return None
        host = opt.host_options
        fixed.append(tuple(tuple((k, repr(v)) for k, v in g.items() if k != "params" and k not in host)
                           for g in opt.param_groups))
        return tuple(fixed), handles, grads, devices.pop()

    def matches(self, key) -> bool:
        return (key[0] == self.key[0] and key[3] is self.device and len(key[1]) == len(self.key[1])
                and all(a is b for a, b in zip(key[1], self.key[1])))

    def run(self, key):
        self._put(key[2])
        launch.replay(self.items, self.device)
        self._put([None] * len(key[2]))     # the gradients' memory is not kept past this step

    def _put(self, grads):
        for it, j, k in self.slots:
            if j is None:
                it.src = grads[k]
            else:
                it.args[j] = grads[k]


class SGD(Optimizer):
    host_options = ("lr", "initial_lr")     # lr reaches the update as a Var only
    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    _state_step = False

    def _set_scalars(self, i, g, t):
        # PyTorch starts the momentum buffer at the parameter's first gradient, undampened
        self._set(i, lr=g["lr"], mom=0.0 if t == 1 else g["momentum"],
                  damp=1.0 if t == 1 else 1.0 - g["dampening"])

    def _update(self, i, p, g, grp, gi):
        lr = self._var(i, "lr")
        if grp["weight_decay"]:
            g = g + p * grp["weight_decay"]
        if grp["momentum"]:
            buf = self._buffer(i, "momentum_buffer")
            new_buf = buf * self._var(i, "mom") + g * self._var(i, "damp")
            d = g + new_buf * grp["momentum"] if grp["nesterov"] else new_buf
            return [(p, p - d * lr), (buf, new_buf)]
        return [(p, p - g * lr)]


class Adam(Optimizer):
    host_options = ("lr", "initial_lr")     # lr reaches the update as a Var only
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _set_scalars(self, i, g, t):
        b1, b2 = g["betas"]
        self._set(i, step_size=g["lr"] / (1 - b1 ** t), inv_sqrt_bc2=1.0 / math.sqrt(1 - b2 ** t), lr=g["lr"])

    def _update(self, i, p, g, grp, gi):
        b1, b2 = grp["betas"]
        wd = grp["weight_decay"]
        m, v = self._buffer(i, "exp_avg"), self._buffer(i, "exp_avg_sq")
        base = p
        if wd and self._decoupled:
            base = p * (1.0 - self._var(i, "lr") * wd)
        elif wd:
            g = g + p * wd
        new_m = m * b1 + g * (1 - b1)
        new_v = v * b2 + g * g * (1 - b2)
        denom = new_v.sqrt() * self._var(i, "inv_sqrt_bc2") + grp["eps"]
        return [(p, base - new_m * self._var(i, "step_size") / denom), (m, new_m), (v, new_v)]


class AdamW(Adam):
    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


class RMSprop(Optimizer):
    host_options = ("lr", "initial_lr")     # lr reaches the update as a Var only
    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        if lr < 0 or eps < 0 or momentum < 0 or not 0 <= alpha:
            raise ValueError(f"RMSprop: invalid lr={lr}, alpha={alpha}, eps={eps} or momentum={momentum}")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered))

    def _set_scalars(self, i, g, t):
        self._set(i, lr=g["lr"])

    def _update(self, i, p, g, grp, gi):
        alpha, eps, wd, mom = grp["alpha"], grp["eps"], grp["weight_decay"], grp["momentum"]
        lr = self._var(i, "lr")
        if wd:
            g = g + p * wd
        sq = self._buffer(i, "square_avg")
        new_sq = sq * alpha + g * g * (1 - alpha)
        out = [(sq, new_sq)]
        if grp["centered"]:
            ga = self._buffer(i, "grad_avg")
            new_ga = ga * alpha + g * (1 - alpha)
            avg = (new_sq - new_ga * new_ga).sqrt() + eps
            out.append((ga, new_ga))
        else:
            avg = new_sq.sqrt() + eps
        if mom > 0:
            buf = self._buffer(i, "momentum_buffer")
            new_buf = buf * mom + g / avg
            out.append((buf, new_buf))
            return [(p, p - new_buf * lr)] + out
        return [(p, p - g / avg * lr)] + out


class Adagrad(Optimizer):
    host_options = ("lr", "initial_lr")     # lr reaches the update as a Var only
    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
        if lr < 0 or lr_decay < 0 or initial_accumulator_value < 0 or eps < 0:
            raise ValueError(f"Adagrad: invalid lr={lr}, lr_decay={lr_decay}, initial_accumulator_value="
                             f"{initial_accumulator_value} or eps={eps}")
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps))
        for i in range(len(self.params)):   # as torch: the sums exist (and are saved) before any step
            self._buffer(i, "sum")

    def _set_scalars(self, i, g, t):
        self._set(i, clr=g["lr"] / (1 + (t - 1) * g["lr_decay"]))

    def _buffer(self, i, name):
        st = self.state[i]
        if name == "sum" and name not in st and not self._planning:
            p = self.params[i]
            init = self.param_groups[self._group_of[i]]["initial_accumulator_value"]
            st[name] = tensor(np.full(p.shape, init, np.float32), device=p.device)
        return super()._buffer(i, name)

    def _update(self, i, p, g, grp, gi):
        if grp["weight_decay"]:
            g = g + p * grp["weight_decay"]
        s = self._buffer(i, "sum")
        new_s = s + g * g
        return [(p, p - g / (new_s.sqrt() + grp["eps"]) * self._var(i, "clr")), (s, new_s)]
