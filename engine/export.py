"""Training steps as data: the forward and backward IR of one step, serialised to
versioned JSON so another process (an engine-node) can compile and run it for its own
device without receiving any Python code.

The JSON is device-neutral because the IR is: a MATMUL node is its two operands, and each
device lowers it (engine/lowering.py) when the program runs there.
"""
from __future__ import annotations

import numpy as np

from . import ir, realize as rz
from .autograd import grad
from .jit import CompiledStep
from .runtime import NP_DTYPES, get_device
from .tensor import Tensor, realize_all, tensor
from .validate import check_program

__all__ = ["trace_training_step", "StepProgram", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_MAX_EMBEDDED = 1 << 16   # constants (e.g. class indices) travel inside the JSON
_OPS = ir.ELEMENTWISE | ir.REDUCE | ir.MOVEMENT | {"MATMUL", "BUFFER", "CONST", "RAND"}


def _arg_to_json(arg):
    if isinstance(arg, tuple):
        return [_arg_to_json(a) for a in arg]
    return arg


def _arg_from_json(arg):
    if isinstance(arg, list):
        return tuple(_arg_from_json(a) for a in arg)
    return arg


def _serialise(outputs, inputs: dict, constants: dict, param_names, param_shapes) -> dict:
    order = ir.toposort(outputs + list(inputs))
    ids = {n: i for i, n in enumerate(order)}
    out = []
    for n in order:
        d = {"op": n.op, "srcs": [ids[s] for s in n.srcs], "shape": list(n.shape), "dtype": n.dtype}
        if n.op == "BUFFER":
            if n in inputs:
                d["input"] = inputs[n]
            else:
                d["data"] = constants[n].reshape(-1).tolist()
        elif n.op != "MATMUL":
            d["arg"] = _arg_to_json(n.arg)
        out.append(d)
    return {"format": "many-as-one/step", "v": FORMAT_VERSION, "nodes": out,
            "outputs": [ids[n] for n in outputs], "param_names": list(param_names),
            "param_shapes": [list(s) for s in param_shapes]}


def _build(doc: dict):
    """IR nodes from a step document, checking every node as it is built."""
    if not isinstance(doc, dict) or doc.get("format") != "many-as-one/step":
        raise ValueError("not a step program (missing format 'many-as-one/step')")
    if doc.get("v") != FORMAT_VERSION:
        raise ValueError(f"step program version {doc.get('v')!r} is not supported (want {FORMAT_VERSION})")
    check_program(doc)   # engine/validate.py: schema, ranges and budgets before any node is built
    nodes, inputs, constants = [], {}, {}
    for i, nd in enumerate(doc["nodes"]):
        op = nd.get("op")
        if op not in _OPS:
            raise ValueError(f"node {i}: unknown op {op!r}")
        src_ids = nd.get("srcs", [])
        if not all(isinstance(j, int) and 0 <= j < i for j in src_ids):
            raise ValueError(f"node {i}: sources must refer to earlier nodes")
        srcs = [nodes[j] for j in src_ids]
        shape, dtype = tuple(int(s) for s in nd["shape"]), nd["dtype"]
        if dtype not in ir.DTYPES:
            raise ValueError(f"node {i}: unknown dtype {dtype!r}")
        try:
            n = _rebuild(op, srcs, _arg_from_json(nd.get("arg")), shape, dtype)
        except (TypeError, IndexError, ValueError) as exc:
            raise ValueError(f"node {i} ({op}): {exc}") from exc
        if n.shape != shape or n.dtype != dtype:
            raise ValueError(f"node {i} ({op}): declared shape/dtype {shape}/{dtype} but it computes {n.shape}/{n.dtype}")
        if op == "BUFFER":
            if "input" in nd:
                inputs[n] = str(nd["input"])
            else:
                data = np.asarray(nd["data"], dtype=NP_DTYPES[dtype])
                if data.size != n.numel:
                    raise ValueError(f"node {i}: embedded constant has {data.size} values for shape {shape}")
                constants[n] = data.reshape(shape)
        nodes.append(n)
    outputs = [nodes[i] for i in doc["outputs"]]
    return nodes, inputs, outputs, constants


def _rebuild(op, srcs, arg, shape, dtype):
    if op == "BUFFER":
        return ir.buffer(shape, dtype)
    if op == "CONST":
        return ir.const(arg, shape, dtype)
    if op == "RAND":
        return ir.rand(shape, *arg)
    if op == "CAST":
        return ir.cast(srcs[0], arg)
    if op in ir.UNARY:
        return ir.unary(op, srcs[0])
    if op in ir.BINARY:
        return ir.binary(op, *srcs)
    if op == "WHERE":
        return ir.where(*srcs)
    if op in ir.REDUCE:
        return ir.reduce(op, srcs[0], arg)
    if op == "MATMUL":
        return ir.matmul(*srcs)
    return {"RESHAPE": ir.reshape, "PERMUTE": ir.permute, "EXPAND": ir.expand, "SHRINK": ir.shrink,
            "PAD": ir.pad}.get(op, lambda x, a: ir.window(x, *a))(srcs[0], arg)


class StepProgram:
    """IR of loss and gradients as functions of named inputs (params, x, y)."""

    def __init__(self, doc: dict):
        self.doc = doc
        # building once checks the whole document before anything is bound to a device
        self.nodes, self.inputs, self.outputs, self.constants = _build(doc)
        self.param_names = list(doc["param_names"])
        self.param_shapes = [tuple(s) for s in doc["param_shapes"]]

    def to_json(self) -> dict:
        return self.doc

    @classmethod
    def from_json(cls, d: dict) -> "StepProgram":
        """Validate a step document (shapes, dtypes, ops, references); never runs code."""
        return cls(d)

    def bind(self, device=None) -> "StepRunner":
        return StepRunner(self, get_device(device))


class StepRunner:
    """A StepProgram compiled for one device; ``run`` replays its captured launch list."""

    def __init__(self, prog: StepProgram, device):
        self.prog, self.device = prog, device
        nodes, inputs, outputs, constants = _build(prog.doc)
        self.slots = {}
        for n, name in inputs.items():
            rz.bind_buffer(n, device.alloc(n.nbytes))
            self.slots[name] = Tensor(n, device)
        for n, data in constants.items():
            rz.bind_buffer(n, device.upload(data))
        self.outs = [Tensor(n, device) for n in outputs]
        self.step = CompiledStep(self._outputs)

    def _outputs(self) -> list:
        # the gradients scheduled last parameter first, the order backward can finish them
        # in: the last layer's weight gradient is launched before the earlier layers'
        # input gradients, so an engine-node can all-reduce it while the device computes
        # the rest (cluster/shmstream.py); the kernels and their results are the same
        realize_all(self.outs[0], *reversed(self.outs[1:]))
        return self.outs

    def run(self, params, x, y):
        if len(params) != len(self.prog.param_names):
            raise ValueError(f"expected {len(self.prog.param_names)} parameters, got {len(params)}")
        feeds = {f"param:{i}": p for i, p in enumerate(params)} | {"x": x, "y": y}
        for name, t in self.slots.items():
            arr = np.ascontiguousarray(feeds[name], dtype=NP_DTYPES[t.dtype])
            if arr.shape != t.shape:
                raise ValueError(f"input {name}: shape {arr.shape}, program wants {t.shape}")
            self.device.upload(arr, dest=rz.buffer_of(t.node))
        outs = self.step()
        vals = [o.numpy() for o in outs]
        return float(vals[0].reshape(())), vals[1:]


def trace_training_step(model, loss_fn, x_example, y_example) -> StepProgram:
    """IR of ``loss_fn(model(x), y)`` and its gradients w.r.t. the model's parameters."""
    params = model.parameters()
    names = [n for n, _ in model.named_parameters()]
    dev = params[0].device
    x = tensor(np.asarray(x_example), device=dev)
    y = tensor(np.asarray(y_example), device=dev)
    loss = loss_fn(model(x), y)
    trainable = [p for p in params if p.requires_grad]
    got = dict(zip(map(id, trainable), grad(loss, trainable, allow_unused=True))) if trainable else {}
    grads = [got.get(id(p)) if got.get(id(p)) is not None else Tensor(ir.const(0.0, p.shape), dev) for p in params]
    outputs = [loss.node] + [g.node for g in grads]
    inputs = {p.node: f"param:{i}" for i, p in enumerate(params)}
    inputs[x.node], inputs[y.node] = "x", "y"
    constants = {}
    for n in ir.toposort(outputs):
        if n.op == "BUFFER" and n not in inputs:
            if n.numel > _MAX_EMBEDDED:
                raise ValueError(f"step program would embed a {n.shape} constant; pass it as an input instead")
            constants[n] = dev.download(rz.buffer_of(n), n.shape, n.dtype)
    return StepProgram(_serialise(outputs, inputs, constants, names, [p.shape for p in params]))
