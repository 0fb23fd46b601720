"""Durable checkpoints: safetensors weights + a JSON commit record, written atomically.

A checkpoint of step N is two files in one directory:

    step-0000000N-<token>.safetensors   model weights ("model/<name>") and optimizer
                                        tensors ("optim/<param>/<name>")
    step-0000000N.json                  the commit record: optimizer scalars, RNG state,
                                        loader position, user extras, and a manifest with
                                        the weights file's size and SHA-256

Each file is written aside, fsync'ed, renamed into place, and the directory fsync'ed. The
weights go first under a fresh name, the JSON last, so a checkpoint exists only once its
record does, and a crash at any point (even re-saving the same step) leaves every earlier
checkpoint intact. `restore` walks back from the newest record, verifies sizes and
checksums before touching the model, warns about each bad checkpoint (file and reason) and
loads the newest good one; a checkpoint whose tensors do not fit the model (another
architecture's, or a wrong shape) is skipped the same way, with the model left as it was.
A save that fails (disk full, read-only, over a file-size limit) raises CheckpointError
naming the directory and the cause, and leaves no temporary or orphan file behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
import warnings

import numpy as np
from safetensors.numpy import load as st_load, save as st_save

import engine

from .files import atomic_write

__all__ = ["CheckpointManager", "CheckpointError"]

FORMAT = 1
_RECORD = re.compile(r"^step-(\d{8,})\.json$")
_TMP = re.compile(r"\.tmp-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or corrupt: the message names the file and what failed."""


def _json_default(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"{type(v).__name__} is not JSON-serialisable")


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, default=_json_default).encode()


def _numpy(v) -> np.ndarray:
    return np.ascontiguousarray(v.numpy() if hasattr(v, "numpy") else np.asarray(v))


def _fsync_dir(directory: str):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: str):
    try:
        os.remove(path)
    except OSError:
        pass


def _write_atomic(path: str, data: bytes):
    """atomic_write with the folder synced; on any OS error the temp file is removed (a
    full disk must not stay full of our leftovers) and CheckpointError says why."""
    try:
        atomic_write(path, data, sync_folder=True)
    except OSError as e:
        hint = {28: " (the disk is full)", 30: " (the file system is read-only)", 13: " (no permission to write there)",
                27: " (over the process's file-size limit)", 122: " (over the disk quota)"}.get(e.errno, "")
        raise CheckpointError(f"cannot write checkpoint file {path}: {e.strerror or e}{hint}; "
                              "nothing of it was left behind") from e


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CheckpointManager:
    """Save and restore training state in `directory`, keeping the newest `keep` checkpoints."""

    def __init__(self, directory, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.keep = keep
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"cannot create checkpoint directory {self.directory}: {e.strerror or e}") from e

    # -- listing ------------------------------------------------------------------------
    def steps(self) -> list[int]:
        """Steps with a commit record, oldest first (not yet verified)."""
        return sorted(int(m.group(1)) for f in os.listdir(self.directory) if (m := _RECORD.match(f)))

    def _record_path(self, step: int) -> str:
        return os.path.join(self.directory, f"step-{step:08d}.json")

    # -- saving -------------------------------------------------------------------------
    def save(self, step: int, model, optimizer=None, loader=None, extra: dict | None = None) -> str:
        """Write a checkpoint of `step`; returns the path of its commit record."""
        step = int(step)
        tensors = {f"model/{k}": _numpy(v) for k, v in model.state_dict().items()}
        state = {"step": step, "time": time.time(), "extra": extra or {}}
        if optimizer is not None:
            sd = optimizer.state_dict()
            scalars, names = {}, {}
            for i, entry in sd.get("state", {}).items():
                for k, v in entry.items():
                    if isinstance(v, (int, float, bool, np.generic)) or v is None:
                        scalars.setdefault(str(i), {})[k] = v
                    else:
                        tensors[f"optim/{i}/{k}"] = _numpy(v)
                        names.setdefault(str(i), []).append(k)
            state["optimizer"] = {"param_groups": sd.get("param_groups", []), "scalars": scalars,
                                  "tensors": names}
        if loader is not None:
            state["loader"] = loader.state_dict()
        state["rng"] = engine.random_state()
        # Through JSON once, so the checksum is over exactly what restore will read back
        # (int dict keys become strings, tuples lists, numpy scalars numbers).
        state = json.loads(json.dumps(state, default=_json_default))
        weights = st_save(tensors, metadata={"step": str(step), "format": str(FORMAT)})
        name = f"step-{step:08d}-{secrets.token_hex(4)}.safetensors"
        _write_atomic(os.path.join(self.directory, name), weights)
        record = {"format": FORMAT, "state": state, "state_sha256": hashlib.sha256(_canonical(state)).hexdigest(),
                  "weights": {"file": name, "bytes": len(weights),
                              "sha256": hashlib.sha256(weights).hexdigest()}}
        path = self._record_path(step)
        try:
            _write_atomic(path, json.dumps(record, indent=1, default=_json_default).encode())
        except CheckpointError:
            _remove_quietly(os.path.join(self.directory, name))   # weights no record names: space back
            raise
        try:
            self._prune()
        except OSError as e:
            warnings.warn(f"checkpoint {path} saved, but pruning old ones failed: {e}", RuntimeWarning, stacklevel=2)
        return path

    def _prune(self):
        """Drop checkpoints beyond `keep` (record first, so a crash never leaves a record
        without its weights), then weights no record names and stale temp files."""
        for step in self.steps()[:-self.keep]:
            os.remove(self._record_path(step))
        _fsync_dir(self.directory)
        referenced = set()
        for step in self.steps():
            try:
                with open(self._record_path(step), "rb") as f:
                    referenced.add(json.load(f)["weights"]["file"])
            except (OSError, ValueError, KeyError, TypeError):
                continue   # a damaged record: restore reports it; leave its weights for inspection
        for f in os.listdir(self.directory):
            tmp = _TMP.search(f)
            stale = tmp is not None and int(tmp.group(1)) != os.getpid() and not _pid_alive(int(tmp.group(1)))
            orphan = f.endswith(".safetensors") and f.startswith("step-") and f not in referenced
            if stale or orphan:
                try:
                    os.remove(os.path.join(self.directory, f))
                except FileNotFoundError:
                    pass

    # -- restoring ----------------------------------------------------------------------
    def load(self, step: int) -> tuple[dict, dict]:
        """Read and verify checkpoint `step`: (state, tensors), or CheckpointError."""
        path = self._record_path(step)
        try:
            with open(path, "rb") as f:
                record = json.loads(f.read())
            state, weights = record["state"], record["weights"]
        except FileNotFoundError as e:
            raise CheckpointError(f"{path}: missing") from e
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: commit record unreadable ({type(e).__name__}: {e})") from e
        if hashlib.sha256(_canonical(state)).hexdigest() != record.get("state_sha256"):
            raise CheckpointError(f"{path}: state checksum mismatch (the record was modified or damaged)")
        wpath = os.path.join(self.directory, os.path.basename(weights["file"]))
        try:
            with open(wpath, "rb") as f:
                data = f.read()
        except OSError as e:
            raise CheckpointError(f"{wpath}: weights unreadable ({e})") from e
        if len(data) != weights["bytes"]:
            raise CheckpointError(f"{wpath}: truncated or extended: {len(data)} bytes, "
                                  f"manifest says {weights['bytes']}")
        if hashlib.sha256(data).hexdigest() != weights["sha256"]:
            raise CheckpointError(f"{wpath}: SHA-256 mismatch with {os.path.basename(path)} (corrupt weights)")
        try:
            tensors = st_load(data)
        except Exception as e:   # safetensors raises its own error types
            raise CheckpointError(f"{wpath}: not valid safetensors ({e})") from e
        return state, tensors

    def _check_fits(self, model, optimizer, state, weights, tensors, step):
        """CheckpointError unless every tensor of the checkpoint fits the model (and its
        optimizer state fits the parameters), checked before anything is loaded."""
        where = self._record_path(step)
        own = {k: tuple(_numpy(v).shape) for k, v in model.state_dict().items()} if hasattr(model, "state_dict") else {}
        if own and set(own) != set(weights):     # (a model that declares no state takes what comes)
            raise CheckpointError(f"{where}: tensors {sorted(set(weights) ^ set(own))} are in only one of the "
                                  "checkpoint and the model (another model's checkpoint?)")
        for k, shape in own.items():
            if tuple(weights[k].shape) != shape:
                raise CheckpointError(f"{where}: {k} has shape {tuple(weights[k].shape)} in the checkpoint but "
                                      f"{shape} in the model")
        params = getattr(optimizer, "params", None)
        if optimizer is None or params is None or "optimizer" not in state:
            return
        try:
            names = {(int(i), k) for i, ks in state["optimizer"]["tensors"].items() for k in ks}
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{where}: optimizer state unreadable ({type(e).__name__}: {e})") from e
        for i, k in names:
            t = tensors.get(f"optim/{i}/{k}")
            if t is None or not 0 <= i < len(params) or tuple(t.shape) != tuple(params[i].shape):
                raise CheckpointError(f"{where}: optimizer state optim/{i}/{k} does not fit parameter {i} "
                                      f"of the optimizer")

    def restore(self, model, optimizer=None, loader=None) -> dict | None:
        """Load the newest valid checkpoint into model / optimizer / loader and the engine's
        RNG. Returns {"step", "extra", "loader", "path"} or None when there is none. Bad
        checkpoints are skipped with a warning that names the file and the failure."""
        for step in reversed(self.steps()):
            try:
                state, tensors = self.load(step)
                weights = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
                self._check_fits(model, optimizer, state, weights, tensors, step)
            except CheckpointError as e:
                warnings.warn(f"skipping checkpoint of step {step}: {e}", RuntimeWarning, stacklevel=2)
                continue
            model.load_state_dict(weights)
            if optimizer is not None and "optimizer" in state:
                opt = state["optimizer"]
                per_param = {int(i): dict(v) for i, v in opt["scalars"].items()}
                for i, names in opt["tensors"].items():
                    for k in names:
                        per_param.setdefault(int(i), {})[k] = tensors[f"optim/{i}/{k}"]
                optimizer.load_state_dict({"param_groups": opt["param_groups"], "state": per_param})
            if loader is not None and "loader" in state:
                loader.load_state_dict(state["loader"])
            if "rng" in state:
                engine.set_random_state(state["rng"])
            return {"step": state["step"], "extra": state["extra"], "loader": state.get("loader"),
                    "path": self._record_path(step)}
        return None
