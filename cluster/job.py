"""A training job's state on a node: its weights, optimizer and rows (from the message
or this node's data directory, checked against the driver's content hash), the compiled
programs per batch size, and the device trainer once weights move to the device.
JobError is the refusal a job request gets (an `error` reply with its code)."""
from __future__ import annotations

import os
import re

import numpy as np

from . import devicetrain, hostpool, wire
from . import transport as tp
from .optimizer import HostOptimizer


class JobError(RuntimeError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


DATASET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def local_dataset(data_dir: str | None, spec: dict) -> dict:
    """The job's rows from this node's data directory: <data_dir>/<name>.arrow, checked
    against the driver's content hash so every node trains on the same rows."""
    name, digest = spec.get("name"), spec.get("digest")
    if set(spec) != {"name", "digest"} or not isinstance(name, str) or not DATASET_NAME.fullmatch(name):
        raise JobError("bad_job", f"dataset must be {{name, digest}} with a plain file name, got {spec!r}")
    if not data_dir:
        raise JobError("no_dataset", f"job names dataset {name!r} but this node has no data directory "
                       "(set ENGINE_NODE_DATA)")
    path = os.path.join(data_dir, name + ".arrow")
    if not os.path.isfile(path):
        raise JobError("no_dataset", f"dataset {name!r} not found: {path}")
    table = wire.load_table(path)
    if wire.table_digest(table) != digest:
        raise JobError("bad_dataset", f"{path} differs from the driver's dataset {name!r} (content hash)")
    return table


class Job:
    def __init__(self, msg: wire.Message, data_dir: str | None = None):
        names, n_state = msg["names"], msg["n_state"]
        if not all(isinstance(n, str) for n in names) or len(msg.tensors) != len(names) + n_state:
            raise JobError("bad_job", f"{len(msg.tensors)} tensors for {len(names)} params + {n_state} state")
        table = local_dataset(data_dir, msg["dataset"]) if "dataset" in msg.fields else msg.table
        if table is None or set(table) != {"x", "y"} or len(table["x"]) != len(table["y"]):
            raise JobError("bad_job", "job needs a table with columns x and y of equal length")
        self.id, self.names, self.step = msg["job"], names, msg["step"]
        self.params = [np.array(t, np.float32) for t in msg.tensors[:len(names)]]
        self.shapes = [p.shape for p in self.params]
        # elements of each parameter, in order (the packed gradient buffer's layout); asked
        # for every step
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.opt = HostOptimizer(msg["optimizer"], self.shapes)
        if n_state:
            self.opt.load(msg.tensors[len(names):], self.step)
        else:
            self.opt.t = self.step
        self.x, self.y = table["x"], table["y"]
        self.host_optimizer = bool(msg.fields.get("host_optimizer", False))   # the driver's choice (mixed devices)
        try:     # the type gradients travel in around the ring (transport.py); the loss and vote stay float32
            self.transport = tp.canonical(msg.fields.get("transport", "float32"))
        except ValueError as e:
            raise JobError("bad_job", str(e)) from None
        self.runners: dict[int, object] = {}
        self.prev = None   # (params, state, t) before the last update (host path), to roll back a step
        # engine programs: weights and optimizer state move to the device with the first
        # program (devicetrain); until then, and for reference programs, they are on the host
        self.dev: devicetrain.DeviceTrainer | None = None
        self.flat: np.ndarray | None = None   # packed gradients + loss + halt vote, reused every step
        self.scratch: np.ndarray | None = None  # a further micro-batch's gradients + loss (accumulation)

    def to_device(self, device) -> None:
        if self.dev is None:
            self.dev = devicetrain.DeviceTrainer(device, self.opt.spec, self.params, self.opt.state, self.step)
            self.params = self.opt = None      # the device holds them now

    def snap_step(self) -> int:
        """The step this node can roll back to (besides staying where it is); -1: none."""
        if self.dev:
            return self.dev.snap[0] if self.dev.snap and self.dev.snap[0] is not None else -1
        return self.prev[2] if self.prev is not None else -1

    def weights(self) -> list[np.ndarray]:
        return self.dev.weights() if self.dev else self.params

    def opt_state(self) -> list[np.ndarray]:
        return self.dev.state() if self.dev else self.opt.state

    def digest(self) -> str:
        """Checksum of the weights, compared across nodes every --digest-every steps.  It
        guards against bugs and nondeterminism, not attackers (peers are authenticated):
        an exact integer sum of each float's bits times an odd weight per position
        (hostpool.weights_checksum), which a device computes in place (the big MLP's 80 MB
        of weights took 33 ms to download and CRC-32 on the host) to the same value."""
        return self.dev.checksum() if self.dev else hostpool.weights_checksum(self.params)

    def digest_behind(self):
        """digest() as a callable that returns it: on a device, enqueued behind the step and
        read when called (DeviceTrainer.checksum_behind), so a run does not wait for it."""
        if self.dev:
            return self.dev.checksum_behind()
        value = self.digest()
        return lambda: value
