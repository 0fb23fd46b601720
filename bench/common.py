"""What every benchmark prints beside its numbers: device, driver, commit."""
from __future__ import annotations

import platform
import subprocess
import time

import numpy as np


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def header(device) -> str:
    return (f"device: {device.platform} / {device.name} ({device.kind}, driver {device.driver}); "
            f"host: {platform.processor() or platform.machine()}, numpy {np.__version__}; commit {commit()}")


def best_of(fn, repeat=5, number=1) -> float:
    """Best wall time of ``number`` calls, over ``repeat`` tries (the machine is noisy)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def relu_mlp(nn, sizes, **linear_kw):
    """The benchmarks' MLP: Linear layers through `sizes` with a ReLU between each two, from
    `nn` (engine.nn or torch.nn, which name them alike); linear_kw go to every Linear (the
    engine's device=)."""
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b, **linear_kw), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def try_torch():
    try:
        import torch
        return torch
    except ImportError:
        return None
