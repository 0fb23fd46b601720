"""Mako templates of OpenCL C and the one function that renders them.

This package is the only place OpenCL C is written. Python elsewhere builds parameters
(shapes, strides, tile sizes, and the fused expression as a list of SSA statements);
the templates turn them into source. Templates render with ``strict_undefined`` so a
missing parameter is an error naming it, never an empty string.
"""
from __future__ import annotations

import os

from mako.exceptions import MakoException
from mako.lookup import TemplateLookup

__all__ = ["render", "TemplateParameterError", "TEMPLATE_DIR"]

TEMPLATE_DIR = os.path.dirname(os.path.abspath(__file__))

_lookup = TemplateLookup(directories=[TEMPLATE_DIR], strict_undefined=True,
                         input_encoding="utf-8")


class TemplateParameterError(ValueError):
    """A template was rendered without a parameter it needs (or with a bad one)."""


def render(template: str, **params) -> str:
    """Render ``kernels/<template>.cl.mako`` with ``params``; return OpenCL C source."""
    try:
        tmpl = _lookup.get_template(f"{template}.cl.mako")
    except MakoException as exc:
        raise TemplateParameterError(f"no kernel template {template!r}: {exc}") from exc
    try:
        return tmpl.render(**params)
    except NameError as exc:
        raise TemplateParameterError(
            f"template {template!r} is missing a parameter: {exc}; given {sorted(params)}") from exc
