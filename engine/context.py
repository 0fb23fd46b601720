"""Per-thread engine state a user switches: grad mode, module scopes (labels shown by
``explain`` and the UI) and the host random generator."""
from __future__ import annotations

import contextlib
import threading
import weakref

import numpy as np

from . import ir

__all__ = ["no_grad", "grad_enabled", "scope", "scope_of", "label", "manual_seed", "host_rng",
           "random_state", "set_random_state"]

_state = threading.local()
_scopes: "weakref.WeakKeyDictionary[ir.Node, str]" = weakref.WeakKeyDictionary()
_rng = np.random.Generator(np.random.PCG64(0))


def grad_enabled():
    return getattr(_state, "grad", True)


@contextlib.contextmanager
def no_grad():
    prev = grad_enabled()
    _state.grad = False
    try:
        yield
    finally:
        _state.grad = prev


@contextlib.contextmanager
def scope(name: str):
    """Label nodes built inside with a module path (shown by explain and the UI)."""
    stack = getattr(_state, "scope", [])
    _state.scope = stack + [name] if name else stack
    try:
        yield
    finally:
        _state.scope = stack


def scope_of(node) -> str:
    return _scopes.get(node, "")


def manual_seed(seed: int):
    global _rng
    _rng = np.random.Generator(np.random.PCG64(int(seed)))


def host_rng() -> np.random.Generator:
    """The engine's host RNG (parameter init, dropout seeds); reseeded by manual_seed."""
    return _rng


def random_state() -> dict:
    return _rng.bit_generator.state


def set_random_state(state: dict):
    _rng.bit_generator.state = state


def label(node: ir.Node) -> None:
    """Remember the module scope ``node`` was built in (first scope wins)."""
    stack = getattr(_state, "scope", None)
    if stack and node not in _scopes:
        _scopes[node] = ".".join(stack)
