"""Neural-network layers (PyTorch-shaped)."""
from . import functional, utils
from .modules import *  # noqa: F401,F403
from .modules import __all__ as _modules_all

__all__ = ["functional", "utils"] + list(_modules_all)
