"""Device memory: a pooled allocation, and the numpy dtype of each engine dtype."""
from __future__ import annotations

import numpy as np

__all__ = ["Buffer", "NP_DTYPES"]

NP_DTYPES = {"float32": np.float32, "int32": np.int32, "int64": np.int64, "bool": np.uint8}


class Buffer:
    """A device allocation; returns its memory to the device pool when collected."""
    __slots__ = ("device", "mem", "nbytes", "__weakref__")

    def __init__(self, device, mem, nbytes: int):    # device: an engine.device.Device
        self.device, self.mem, self.nbytes = device, mem, nbytes

    def __del__(self):
        try:
            self.device._release(self.mem, self.nbytes)
        except Exception:  # interpreter shutdown: the pool may already be gone
            pass
