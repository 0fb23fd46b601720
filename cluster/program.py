"""Training-step programs: trace on the driver, load (validate, never execute) on a node.

Two formats travel: the engine's StepProgram IR (engine.trace_training_step) and the
numpy reference MLP (cluster.reference), which needs no OpenCL.
"""
from __future__ import annotations

import numpy as np

from . import reference

try:  # the engine is optional on a node that only runs reference programs
    import engine as _engine
    _ENGINE_ERROR = None if hasattr(_engine, "trace_training_step") else "engine.trace_training_step is missing"
except Exception as e:  # a broken OpenCL install must not stop the daemon from serving
    _engine, _ENGINE_ERROR = None, f"{type(e).__name__}: {e}"
try:
    from engine import runtime as _runtime
except Exception:
    _runtime = None


class ProgramError(ValueError):
    pass


def trace(model, loss_fn, x, y):
    """Program for one local batch size (the batch is baked into the IR)."""
    if isinstance(model, reference.ReferenceMLP):
        return reference.ReferenceProgram(model.sizes, len(x))
    if _ENGINE_ERROR:
        raise ProgramError(f"cannot trace an engine model: {_ENGINE_ERROR}")
    return _engine.trace_training_step(model, loss_fn, x, y)


def load(d: dict):
    """Validated program object from its JSON; raises ProgramError."""
    try:
        if isinstance(d, dict) and d.get("format") == reference.FORMAT:
            return reference.ReferenceProgram.from_json(d)
        if _ENGINE_ERROR:
            raise ProgramError(f"this node cannot run engine programs: {_ENGINE_ERROR}")
        return _engine.StepProgram.from_json(d)
    except ProgramError:
        raise
    except Exception as e:   # from_json reports bad IR in its own exception types
        raise ProgramError(f"program refused: {type(e).__name__}: {e}") from None


def check_device(selector: str) -> str:
    """Resolve a node's --device now, so a typo fails at startup with the list of devices
    instead of at the first job.  Returns "platform / name"; raises ProgramError."""
    if _runtime is None:
        raise ProgramError(f"--device {selector!r}: the engine's OpenCL runtime is not available here")
    try:
        d = _runtime.get_device(selector)
    except Exception as e:   # DeviceNotFound names every device there is
        raise ProgramError(f"--device {selector!r}: {e}") from None
    return f"{d.platform} / {d.name}"


def device_gflops(selector=None, n: int = 1024, windows: int = 3) -> float | None:
    """GFLOP/s of an n x n float32 matmul through the engine on the node's device, the one
    its training steps will run on; None where the engine cannot run.  The first product
    builds the kernel (cached on disk for the next start); the best window counts."""
    if _ENGINE_ERROR or _runtime is None:
        return None
    from time import perf_counter
    from engine.tensor import tensor
    dev, data = _runtime.get_device(selector), np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    best = 0.0
    for i in range(windows + 1):
        a = tensor(data, device=dev)   # a fresh input each time: a realized product is never recomputed
        t0 = perf_counter()
        (a @ a).numpy()
        if i:
            best = max(best, 2 * n ** 3 / (perf_counter() - t0) / 1e9)
    return best


def device_identity(selector=None) -> str | None:
    """"platform|device|driver" of the device a node's engine programs run on (None where
    the engine cannot run): nodes whose identities differ may round the fused optimizer
    update differently, so the driver keeps such a job's optimizer on the host."""
    if _ENGINE_ERROR or _runtime is None:
        return None
    try:
        return _runtime.get_device(selector).identity
    except Exception:
        return None


def params_of(model) -> dict:
    """name -> float32 numpy array, from an engine module or a reference model."""
    out = {}
    for k, v in model.state_dict().items():
        out[k] = np.array(v.numpy() if hasattr(v, "numpy") else v, dtype=np.float32)
    return out


def engine_devices() -> list[dict]:
    if _runtime is None:
        return []
    try:
        return [{"index": d.index, "platform": d.platform, "name": d.name, "kind": d.kind,
                 "driver": d.driver} for d in _runtime.devices()]
    except Exception as e:
        return [{"error": f"{type(e).__name__}: {e}"}]
