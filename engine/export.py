"""Training steps as data: the forward and backward IR of one step, serialised to
versioned JSON so another process (an engine-node) can compile and run it for its own
device without receiving any Python code.
"""
from __future__ import annotations

import numpy as np

from . import ir, realize as rz
from .autograd import backward_pass
from .jit import CompiledStep
from .runtime import NP_DTYPES, get_device
from .tensor import Tensor, no_grad, tensor

__all__ = ["trace_training_step", "StepProgram", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_MAX_EMBEDDED = 1 << 16   # constants (e.g. class indices) travel inside the JSON


def _arg_to_json(arg):
    if isinstance(arg, tuple):
        return [_arg_to_json(a) for a in arg]
    return arg


def _arg_from_json(arg):
    if isinstance(arg, list):
        return tuple(_arg_from_json(a) for a in arg)
    return arg


class StepProgram:
    """IR of loss and gradients as functions of named inputs (params, x, y)."""

    def __init__(self, nodes: list, inputs: dict, outputs: list, param_names: list, param_shapes: list,
                 constants: dict):
        self.nodes, self.inputs, self.outputs = nodes, inputs, outputs
        self.param_names, self.param_shapes = param_names, param_shapes
        self.constants = constants

    def to_json(self) -> dict:
        ids = {n: i for i, n in enumerate(self.nodes)}
        inputs = {ids[n]: name for n, name in self.inputs.items()}
        out = []
        for n in self.nodes:
            d = {"op": n.op, "srcs": [ids[s] for s in n.srcs], "shape": list(n.shape), "dtype": n.dtype}
            if n.op == "BUFFER":
                if ids[n] in inputs:
                    d["input"] = inputs[ids[n]]
                else:
                    d["data"] = self.constants[n].reshape(-1).tolist()
            else:
                d["arg"] = _arg_to_json(n.arg)
            out.append(d)
        return {"format": "many-as-one/step", "v": FORMAT_VERSION, "nodes": out,
                "outputs": [ids[n] for n in self.outputs], "param_names": self.param_names,
                "param_shapes": [list(s) for s in self.param_shapes]}

    @classmethod
    def from_json(cls, d: dict) -> "StepProgram":
        """Rebuild the IR, checking every node as it is built (shapes, dtypes, ops)."""
        if not isinstance(d, dict) or d.get("format") != "many-as-one/step":
            raise ValueError("not a step program (missing format 'many-as-one/step')")
        if d.get("v") != FORMAT_VERSION:
            raise ValueError(f"step program version {d.get('v')!r} is not supported (want {FORMAT_VERSION})")
        nodes, inputs, constants = [], {}, {}
        known = ir.ELEMENTWISE | ir.REDUCE | ir.MOVEMENT | {"MATMUL", "BUFFER", "CONST", "RAND"}
        for i, nd in enumerate(d["nodes"]):
            op = nd.get("op")
            if op not in known:
                raise ValueError(f"node {i}: unknown op {op!r}")
            srcs = [nodes[j] for j in nd.get("srcs", []) if isinstance(j, int) and 0 <= j < i]
            if len(srcs) != len(nd.get("srcs", [])):
                raise ValueError(f"node {i}: sources must refer to earlier nodes")
            shape, dtype = tuple(int(s) for s in nd["shape"]), nd["dtype"]
            if dtype not in ir.DTYPES:
                raise ValueError(f"node {i}: unknown dtype {dtype!r}")
            arg = _arg_from_json(nd.get("arg"))
            n = _rebuild(op, srcs, arg, shape, dtype)
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
        outputs = [nodes[i] for i in d["outputs"]]
        return cls(nodes, inputs, outputs, list(d["param_names"]), [tuple(s) for s in d["param_shapes"]], constants)

    def bind(self, device=None) -> "StepRunner":
        return StepRunner(self, get_device(device))


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
        return ir.gemm(*srcs, arg)
    return {"RESHAPE": ir.reshape, "PERMUTE": ir.permute, "EXPAND": ir.expand, "SHRINK": ir.shrink,
            "PAD": ir.pad}.get(op, lambda x, a: ir.window(x, *a))(srcs[0], arg)


class StepRunner:
    """A StepProgram compiled for one device; ``run`` replays its captured launch list."""

    def __init__(self, prog: StepProgram, device):
        self.prog, self.device = prog, device
        self.slots = {}
        for n, name in prog.inputs.items():
            t = Tensor(n, device)
            rz.bind_buffer(n, device.alloc(n.numel * np.dtype(NP_DTYPES[n.dtype]).itemsize))
            self.slots[name] = t
        for n, data in prog.constants.items():
            rz.bind_buffer(n, device.upload(data))
        self.outs = [Tensor(n, device) for n in prog.outputs]
        self.step = CompiledStep(lambda: self.outs)

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
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    with no_grad():
        backward_pass(loss, Tensor(ir.const(1.0, loss.shape), dev))
    grads = []
    for p in params:
        g = p.grad if p.grad is not None else Tensor(ir.const(0.0, p.shape), dev)
        grads.append(g)
    for p, s in zip(params, saved):
        p.grad = s
    outputs = [loss.node] + [g.node for g in grads]
    nodes = ir.toposort(outputs)
    inputs = {p.node: f"param:{i}" for i, p in enumerate(params)}
    inputs[x.node], inputs[y.node] = "x", "y"
    constants = {}
    for n in nodes:
        if n.op == "BUFFER" and n not in inputs:
            buf = rz.buffer_of(n)
            if n.numel > _MAX_EMBEDDED:
                raise ValueError(f"step program would embed a {n.shape} constant; pass it as an input instead")
            constants[n] = dev.download(buf, n.shape, n.dtype)
    for p in params:
        if p.node not in set(nodes):
            nodes.insert(0, p.node)
    return StepProgram(nodes, inputs, outputs, names, [p.shape for p in params], constants)
