"""torch.utils-shaped helpers: ``engine.utils.data``."""
from . import data

__all__ = ["data"]
