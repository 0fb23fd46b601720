"""ONNX import: ``engine.onnx.load(path_or_ModelProto)`` -> an ``nn.Module``.

Calling the module with engine tensors (or numpy arrays) runs the graph and returns its
outputs (one tensor, or a tuple in graph order). Float initializers become parameters,
so an imported model can be fine-tuned; integer initializers, ``Constant`` nodes and
every subgraph that depends only on them or on input *shapes* (``Shape`` -> ``Gather`` ->
``Concat`` -> ``Reshape`` ...) are computed with numpy on the host (constant folding) and
never reach the device. Models with external data files load through ``onnx.load``.

Needs the ``onnx`` package (an optional extra: ``pip install onnx``); nothing else.
"""
from .importer import OnnxModule, OnnxImportError, SUPPORTED_OPS, load

__all__ = ["load", "OnnxModule", "OnnxImportError", "SUPPORTED_OPS"]
