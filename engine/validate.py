"""The validating loader of step programs: every field of a JSON step document is
checked against a schema before a single IR node is built from it.

A step program arrives from the network (cluster/node.py) and is data, never code; this
module is what makes that data memory-safe and bounded:

- the document: known keys only, at most MAX_NODES nodes, outputs and parameters that
  refer to real nodes;
- every node: a known, device-neutral op (MATMUL, never a device's lowered GEMM) with its
  exact number of sources (each an earlier node), a
  shape of at most MAX_RANK dims and MAX_NUMEL elements, a known dtype, and an `arg`
  of the type, sign and range its op needs: a WINDOW's kernel, stride and dilation are
  integers >= 1 and the window fits its input; a SHRINK's bounds lie inside the source
  with a step >= 1; PAD widths are >= 0; REDUCE axes and PERMUTE orders name existing
  dims (no wrap-around); RAND seeds, CAST dtypes, CONST values (finite) are checked;
  an input BUFFER names x, y or an existing parameter, an embedded one holds exactly
  its shape's values (at most MAX_EMBEDDED);
- budgets: the bytes of every node that may be materialised (all but the views) must fit
  `max_bytes`, and the arithmetic (MATMUL 2*M*N*K, everything else its elements) must fit
  `max_flops`.  Defaults: ENGINE_MAX_PROGRAM_BYTES (4 GiB) and ENGINE_MAX_PROGRAM_FLOPS
  (1e12 a step); engine-node sets the first from --max-program-mb.

Together with the shape rules of engine/ir.py this makes each view's index map stay
inside its source by construction (each movement op's arguments are range-checked
here).  What it does not do: prove bounds over the generated OpenCL index expressions
themselves (codegen would have to), nor stop a program inside its budgets from taking
long (engine-node's per-step time budget does that).
"""
from __future__ import annotations

import math
import os
import re

from . import ir

__all__ = ["ProgramInvalid", "check_program", "MAX_NODES", "MAX_RANK", "MAX_NUMEL", "MAX_EMBEDDED"]

MAX_NODES = 200_000
MAX_RANK = 8
MAX_NUMEL = (1 << 31) - 1          # kernels index with 32-bit ints
MAX_EMBEDDED = 1 << 16
MAX_PARAMS = 1 << 14
DEFAULT_MAX_BYTES = 4 << 30
DEFAULT_MAX_FLOPS = 1e12
_ITEMSIZE = {"float32": 4, "int32": 4, "int64": 8, "bool": 1}
_ARITY = {**{op: 1 for op in ir.UNARY | ir.REDUCE | ir.MOVEMENT}, **{op: 2 for op in ir.BINARY},
          "WHERE": 3, "MATMUL": 2, "BUFFER": 0, "CONST": 0, "RAND": 0}
_DOC_KEYS = {"format", "v", "nodes", "outputs", "param_names", "param_shapes"}
_NODE_KEYS = {"op", "srcs", "shape", "dtype", "arg", "input", "data"}
_PARAM = re.compile(r"param:(\d{1,5})")


class ProgramInvalid(ValueError):
    """A step document that must not be built; the message names the node and field."""


def _int(v) -> bool:
    return type(v) is int


def _ints(v, n=None, lo=None, hi=None) -> bool:
    return (isinstance(v, list) and (n is None or len(v) == n)
            and all(_int(x) and (lo is None or x >= lo) and (hi is None or x <= hi) for x in v))


def _env_number(name: str, default):
    try:
        return type(default)(float(os.environ[name]))
    except (KeyError, ValueError):
        return default


def check_program(doc, *, max_bytes: int | None = None, max_flops: float | None = None) -> dict:
    """Raise ProgramInvalid unless `doc` is a well-formed step program inside the budgets.
    Returns {"bytes", "flops", "nodes"}: what the budgets were measured against."""
    max_bytes = _env_number("ENGINE_MAX_PROGRAM_BYTES", DEFAULT_MAX_BYTES) if max_bytes is None else max_bytes
    max_flops = _env_number("ENGINE_MAX_PROGRAM_FLOPS", DEFAULT_MAX_FLOPS) if max_flops is None else max_flops
    if not isinstance(doc, dict):
        raise ProgramInvalid("a step program is a JSON object")
    if set(doc) - _DOC_KEYS:
        raise ProgramInvalid(f"unknown field(s) {sorted(set(doc) - _DOC_KEYS)}")
    nodes, outputs = doc.get("nodes"), doc.get("outputs")
    names, pshapes = doc.get("param_names"), doc.get("param_shapes")
    if not isinstance(nodes, list) or not 0 < len(nodes) <= MAX_NODES:
        raise ProgramInvalid(f"nodes must be a list of 1..{MAX_NODES} nodes")
    if not (isinstance(names, list) and len(names) <= MAX_PARAMS and all(isinstance(n, str) and len(n) <= 256 for n in names)):
        raise ProgramInvalid(f"param_names must be a list of at most {MAX_PARAMS} names")
    if not (isinstance(pshapes, list) and len(pshapes) == len(names)
            and all(_ints(s, lo=0, hi=MAX_NUMEL) and len(s) <= MAX_RANK for s in pshapes)):
        raise ProgramInvalid("param_shapes must be one shape (list of ints >= 0) per parameter")
    if not (_ints(outputs, lo=0, hi=len(nodes) - 1) and outputs):
        raise ProgramInvalid("outputs must be a non-empty list of node indices")
    shapes: list[tuple] = []
    total_bytes, flops = 0, 0.0
    for i, nd in enumerate(nodes):
        where = f"node {i}"
        if not isinstance(nd, dict) or set(nd) - _NODE_KEYS:
            raise ProgramInvalid(f"{where}: a node is an object with fields {sorted(_NODE_KEYS)}")
        op = nd.get("op")
        if op not in _ARITY:
            raise ProgramInvalid(f"{where}: unknown op {op!r}")
        where = f"node {i} ({op})"
        srcs = nd.get("srcs", [])
        if not _ints(srcs, n=_ARITY[op], lo=0, hi=i - 1):
            raise ProgramInvalid(f"{where}: needs {_ARITY[op]} source(s), each an earlier node; got {srcs!r}")
        shape = nd.get("shape")
        if not (_ints(shape, lo=0, hi=MAX_NUMEL) and len(shape) <= MAX_RANK):
            raise ProgramInvalid(f"{where}: shape must be at most {MAX_RANK} ints in [0, {MAX_NUMEL}]; got {shape!r}")
        numel = math.prod(shape)
        if numel > MAX_NUMEL:
            raise ProgramInvalid(f"{where}: {numel} elements > {MAX_NUMEL}")
        dtype = nd.get("dtype")
        if dtype not in _ITEMSIZE:
            raise ProgramInvalid(f"{where}: unknown dtype {dtype!r}")
        src_shapes = [shapes[j] for j in srcs]
        _check_arg(op, nd, tuple(shape), src_shapes, names, where)
        shapes.append(tuple(shape))
        if op not in ir.MOVEMENT:            # views allocate nothing
            total_bytes += numel * _ITEMSIZE[dtype]
        if op == "MATMUL":
            a, b = src_shapes
            if len(a) < 2 or len(b) < 2 or a[:-2] != b[:-2] or a[-1] != b[-2]:
                raise ProgramInvalid(f"{where}: operands {a} and {b} do not fit [..., M, K] @ [..., K, N]")
            flops += 2.0 * math.prod(a) * b[-1]
        else:
            flops += max([numel] + [math.prod(s) for s in src_shapes])
        if total_bytes > max_bytes:
            raise ProgramInvalid(f"{where}: the program would allocate more than its budget of {max_bytes} bytes "
                                 f"(ENGINE_MAX_PROGRAM_BYTES / engine-node --max-program-mb)")
        if flops > max_flops:
            raise ProgramInvalid(f"{where}: the program needs more than its budget of {max_flops:.3g} operations "
                                 "a step (ENGINE_MAX_PROGRAM_FLOPS)")
    return {"bytes": total_bytes, "flops": flops, "nodes": len(nodes)}


def _check_arg(op: str, nd: dict, shape: tuple, src_shapes: list, names: list, where: str) -> None:
    arg = nd.get("arg")
    extra = {"input", "data"} & set(nd)
    if extra and op != "BUFFER":
        raise ProgramInvalid(f"{where}: field(s) {sorted(extra)} belong to BUFFER nodes only")
    if op == "BUFFER":
        if ("input" in nd) == ("data" in nd) or arg is not None:
            raise ProgramInvalid(f"{where}: a BUFFER has exactly one of input or data, and no arg")
        if "input" in nd:
            name = nd["input"]
            m = _PARAM.fullmatch(name) if isinstance(name, str) else None
            if not (name in ("x", "y") or (m and int(m.group(1)) < len(names))):
                raise ProgramInvalid(f"{where}: input {name!r} is not x, y or param:<i> of an existing parameter")
        else:
            data, n = nd["data"], math.prod(shape)
            if not isinstance(data, list) or len(data) != n or n > MAX_EMBEDDED:
                raise ProgramInvalid(f"{where}: embedded data must be a list of exactly {n} numbers "
                                     f"(at most {MAX_EMBEDDED})")
            if not all(type(v) in (int, float) and math.isfinite(v) for v in data):
                raise ProgramInvalid(f"{where}: embedded data must be finite numbers")
        return
    if op == "CONST":
        if type(arg) not in (int, float) or not math.isfinite(arg) or (nd["dtype"] != "float32" and abs(arg) >= 1 << 63):
            raise ProgramInvalid(f"{where}: value must be a finite number (an int64 for integer dtypes); got {arg!r}")
        return
    if op == "RAND":
        if not _ints(arg, n=2, lo=0, hi=(1 << 63) - 1):
            raise ProgramInvalid(f"{where}: arg must be [seed, offset], two ints in [0, 2^63)")
        return
    if op == "CAST":
        if arg not in _ITEMSIZE:
            raise ProgramInvalid(f"{where}: cast to unknown dtype {arg!r}")
        return
    if op in ir.REDUCE:
        rank = len(src_shapes[0])
        if not (_ints(arg, lo=0, hi=rank - 1) and len(set(arg)) == len(arg)):
            raise ProgramInvalid(f"{where}: axes must be distinct dims of a rank-{rank} source; got {arg!r}")
        return
    if op in ("RESHAPE", "EXPAND"):
        if not (_ints(arg, lo=0, hi=MAX_NUMEL) and tuple(arg) == shape):
            raise ProgramInvalid(f"{where}: target shape {arg!r} must be ints >= 0 equal to the node's shape")
        return
    if op == "PERMUTE":
        rank = len(src_shapes[0])
        if not (_ints(arg, lo=0, hi=rank - 1) and sorted(arg) == list(range(rank))):
            raise ProgramInvalid(f"{where}: order {arg!r} is not a permutation of range({rank})")
        return
    if op == "SHRINK":
        src = src_shapes[0]
        if not (isinstance(arg, list) and len(arg) == len(src)
                and all(_ints(b, n=3) and 0 <= b[0] <= b[1] <= s and b[2] >= 1 for b, s in zip(arg, src))):
            raise ProgramInvalid(f"{where}: bounds {arg!r} must be [start, stop, step >= 1] inside {src}")
        return
    if op == "PAD":
        src = src_shapes[0]
        if not (isinstance(arg, list) and len(arg) == len(src) and all(_ints(w, n=2, lo=0, hi=MAX_NUMEL) for w in arg)):
            raise ProgramInvalid(f"{where}: widths {arg!r} must be one [before >= 0, after >= 0] per dim of {src}")
        return
    if op == "WINDOW":
        src = src_shapes[0]
        if not (isinstance(arg, list) and len(arg) == 3 and all(_ints(a, lo=1, hi=MAX_NUMEL) for a in arg)
                and len({len(a) for a in arg}) == 1 and 1 <= len(arg[0]) <= len(src)):
            raise ProgramInvalid(f"{where}: arg must be [kernel, stride, dilation], equal-length lists of ints >= 1 "
                                 f"over at most {len(src)} dims; got {arg!r}")
        kernel, _, dilation = arg
        spatial = src[len(src) - len(kernel):]
        if any(d * (k - 1) + 1 > s for k, d, s in zip(kernel, dilation, spatial)):
            raise ProgramInvalid(f"{where}: kernel {kernel} with dilation {dilation} does not fit input {spatial}")
        return
    if arg is not None:     # elementwise ops and MATMUL (device-neutral: no tile) take no arg
        raise ProgramInvalid(f"{where}: takes no arg, got {arg!r}")
