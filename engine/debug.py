"""Seeing what the engine does, without a debugger.

``ENGINE_DEBUG=n`` prints to stderr, each level adding to the one before:
  1  the schedule: every kernel of a realize, with the IR ops it fuses
  2  the IR: every node of the scheduled graph
  3  the generated OpenCL source of every kernel built
  4  every launch, with its device time (waits for each kernel: slow)
``ENGINE_DUMP=DIR`` writes every kernel built to DIR/<kernel>.cl, with DIR/<kernel>.json
(template, exact template parameters, launch sizes, fused ops, device and build options).
Both are read when used, so a test or a notebook can switch them on and off.
"""
from __future__ import annotations

import json
import os
import sys

from . import ir

__all__ = ["level", "on_schedule", "on_build", "on_launch"]


def level() -> int:
    try:
        return int(os.environ.get("ENGINE_DEBUG") or 0)
    except ValueError:
        return 0


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def on_schedule(lowered, targets) -> None:
    """Called with a realize's [(group, spec)] before anything is built."""
    lvl = level()
    if lvl < 1 or not lowered:
        return
    _say(f"[engine] schedule: {len(lowered)} kernel(s) for {len(targets)} target(s)")
    for k, (g, spec) in enumerate(lowered):
        _say(f"[engine]   [{k}] {spec.name} ({spec.template}) fuses {' '.join(spec.ops)}; "
             f"global {tuple(spec.global_size)} local {spec.local_size}")
    if lvl >= 2:
        order = ir.toposort(targets)
        ids = {n: i for i, n in enumerate(order)}
        for n in order:
            srcs = ",".join(f"%{ids[s]}" for s in n.srcs)
            _say(f"[engine]   %{ids[n]} = {n.op}({srcs}) arg={n.arg!r} {n.shape} {n.dtype}")


def on_build(spec, device) -> None:
    """Called for each kernel a realize builds (from source or a cache)."""
    if level() >= 3:
        _say(f"[engine] source of {spec.name} ({spec.template}):\n{spec.source}")
    folder = os.environ.get("ENGINE_DUMP")
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    base = os.path.join(folder, spec.name)
    if os.path.exists(base + ".json"):
        return
    with open(base + ".cl", "w") as f:
        f.write(spec.source)
    desc = {"name": spec.name, "template": spec.template, "params": _plain(spec.params),
            "global_size": list(spec.global_size),
            "local_size": None if spec.local_size is None else list(spec.local_size),
            "fused_ops": spec.ops, "device": repr(device),
            "build_options": os.environ.get("ENGINE_BUILD_OPTIONS", "")}
    with open(base + ".json", "w") as f:
        json.dump(desc, f, indent=1, default=repr)


def on_launch(spec, event) -> None:
    if level() >= 4:
        event.wait()
        ms = (event.profile.end - event.profile.start) * 1e-6
        _say(f"[engine] launch {spec.name} {tuple(spec.global_size)}: {ms:.3f} ms")


def _plain(params):
    if isinstance(params, dict):
        return {str(k): _plain(v) for k, v in params.items()}
    if isinstance(params, (list, tuple)):
        return [_plain(v) for v in params]
    return params if isinstance(params, (int, float, str, bool, type(None))) else repr(params)
