"""Bundled examples (real data that ships with installed packages; no download)."""
from . import digits  # noqa: E402,F401
