"""Codegen: one kernel group -> a frozen KernelSpec (name, template, parameters, source,
argument list, launch sizes). Pure: it never touches OpenCL; building and launching are
the runtime's job.

The fused expression is handed to the templates as SSA statements ``(name, op, args,
dtype)``; the templates (``kernels/_ssa.cl.mako``) decide how each is written in C.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import kernels

from . import ir, reduce_plan
from .schedule import KernelGroup
from .shapes import contiguous_strides

__all__ = ["KernelSpec", "lower", "with_vector_width", "set_gemm_vector_width", "GEMM_VECTOR_WIDTHS"]

# float vector widths the CPU GEMM template can use, widest (fastest on PoCL) first; a
# device whose compiler cannot build or run one falls back to the next (engine/program_cache.py)
GEMM_VECTOR_WIDTHS = (16, 8, 4, 1)
# kind -> the widest GEMM vectors every device of that kind in this process takes, as their
# probes found (the runtime sets it when it reads a device's probe, before the first plan)
_gemm_vector_width: dict = {}


def set_gemm_vector_width(kind: str, vector_width: int):
    """Plan CPU GEMMs for devices of ``kind`` with at most ``vector_width``-wide vectors."""
    _gemm_vector_width[kind] = min(_gemm_vector_width.get(kind, GEMM_VECTOR_WIDTHS[0]), vector_width)


@dataclass(frozen=True)
class KernelSpec:
    """A kernel as codegen describes it: ``kernels.render(template, **params) == source``
    (``params`` are exactly what the template got, the kernel name included); ``display``
    is the short summary (shapes, tile, fused ops) that profiles, bundles and the UI show."""
    name: str
    template: str
    params: dict = field(hash=False, compare=False, repr=False)
    source: str = field(repr=False)
    args: tuple = ()          # ("out", node) | ("in", node) | ("var", node) | ("seed",) | ("offset",)
    outputs: tuple = ()
    global_size: tuple = ()
    local_size: tuple | None = None
    fused: tuple = ()         # IR nodes computed inside
    display: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def render(self) -> dict:
        """The exact template parameters: the same dict as ``params`` (an older name)."""
        return self.params

    @property
    def ops(self) -> list:
        return [n.op for n in self.fused]

    def describe(self, ids=None) -> dict:
        ident = (lambda n: ids.get(n, -1)) if ids else id
        return {"name": self.name, "template": self.template, "params": self.display,
                "fused_ops": [ident(n) for n in self.fused], "ops": self.ops,
                "global_size": list(self.global_size),
                "local_size": None if self.local_size is None else list(self.local_size),
                "inputs": [ident(a[1]) for a in self.args if a[0] == "in"],
                "outputs": [ident(n) for n in self.outputs], "source": self.source}


class _Emitter:
    """Collects SSA statements; identical (node, index) pairs are computed once."""

    def __init__(self, leaf_name, anchor=None, anchor_value=None):
        self.stmts: list = []
        self.memo: dict = {}
        self.leaf_name = leaf_name          # node -> kernel argument name, or None if not a leaf
        self.anchor, self.anchor_value = anchor, anchor_value
        self.count = 0
        self.flat_of: dict = {}     # (multi-index, shape) -> the flat index unflatten made it from

    def emit(self, op, args, dtype="int32"):
        key = (op, tuple(args), dtype)
        if key in self.memo:
            return self.memo[key]
        name = f"t{self.count}"
        self.count += 1
        self.stmts.append((name, op, tuple(args), dtype))
        self.memo[key] = name
        return name

    # integer index arithmetic with constant folding
    def iadd(self, a, b):
        if isinstance(a, int) and isinstance(b, int):
            return a + b
        if b == 0:
            return a
        if a == 0:
            return b
        return self.emit("IADD", (a, b))

    def imul(self, a, b):
        if isinstance(a, int) and isinstance(b, int):
            return a * b
        if a == 0 or b == 0:
            return 0
        if b == 1:
            return a
        if a == 1:
            return b
        return self.emit("IMUL", (a, b))

    def idiv(self, a, b):
        if isinstance(a, int):
            return a // b
        return a if b == 1 else self.emit("IDIV", (a, b))

    def imod(self, a, b):
        if isinstance(a, int):
            return a % b
        return 0 if b == 1 else self.emit("IMOD", (a, b))

    def unflatten(self, flat, shape, bounded=True):
        """Multi-index of a flat index over ``shape`` (row-major)."""
        idx = []
        for i, (s, st) in enumerate(zip(shape, contiguous_strides(shape))):
            if s == 1:
                idx.append(0)
                continue
            q = self.idiv(flat, st)
            idx.append(q if (i == 0 and bounded) else self.imod(q, s))
        idx = tuple(idx)
        if bounded:     # then flatten(idx, shape) == flat for any flat >= 0 (mixed radix, open top digit)
            self.flat_of[(idx, tuple(shape))] = flat
        return idx

    def flatten(self, idx, shape):
        # a buffer read at the very index the kernel's own flat index unflattened to (a
        # contiguous operand of the output's shape) is read at that flat index
        known = self.flat_of.get((tuple(idx), tuple(shape)))
        if known is not None:
            return known
        flat = 0
        for i, st in zip(idx, contiguous_strides(shape)):
            flat = self.iadd(flat, self.imul(i, st))
        return flat

    # the value of node n at multi-index idx
    def value(self, n, idx):
        if self.anchor is not None and n is self.anchor:
            return self.anchor_value
        leaf = self.leaf_name(n)
        if leaf is not None:
            if n.op == "VAR":
                return leaf
            return self.emit("LOAD", (leaf, self.flatten(idx, n.shape)), n.dtype)
        op = n.op
        if op == "CONST":
            return n.arg
        if op in ir.ELEMENTWISE:
            args = [self.value(s, idx) for s in n.srcs]
            return self.emit(op, args, n.dtype)
        if op == "RESHAPE":
            src = n.srcs[0]
            return self.value(src, self._reshape_index(idx, n.shape, src.shape))
        if op == "PERMUTE":
            src_idx = [0] * len(idx)
            for j, o in enumerate(n.arg):
                src_idx[o] = idx[j]
            return self.value(n.srcs[0], tuple(src_idx))
        if op == "EXPAND":
            src = n.srcs[0]
            return self.value(src, tuple(0 if s == 1 else i for i, s in zip(idx, src.shape)))
        if op == "SHRINK":
            return self.value(n.srcs[0], tuple(self.iadd(a, self.imul(i, c)) for i, (a, b, c) in zip(idx, n.arg)))
        if op == "PAD":
            src = n.srcs[0]
            valid, src_idx = None, []
            for i, (lo, hi), s in zip(idx, n.arg, src.shape):
                j = self.iadd(i, -lo)
                if lo == 0 and hi == 0:
                    src_idx.append(j)
                    continue
                if isinstance(j, int):
                    if not (0 <= j < s):
                        return 0.0 if n.dtype == "float32" else 0
                    src_idx.append(j)
                    continue
                ok = self.emit("IINRANGE", (j, 0, s))
                valid = ok if valid is None else self.emit("MUL", (valid, ok), "int32")
                src_idx.append(self.emit("ICLAMP", (j, 0, s - 1)))
            v = self.value(src, tuple(src_idx))
            if valid is None:
                return v
            return self.emit("SELECT", (valid, v, 0.0 if n.dtype == "float32" else 0), n.dtype)
        if op == "WINDOW":
            kernel, stride, dil = n.arg
            nd = len(kernel)
            lead = len(idx) - 2 * nd
            out_i, k_i = idx[lead:lead + nd], idx[lead + nd:]
            spatial = tuple(self.iadd(self.imul(o, st), self.imul(k, d))
                            for o, k, st, d in zip(out_i, k_i, stride, dil))
            return self.value(n.srcs[0], tuple(idx[:lead]) + spatial)
        raise NotImplementedError(f"codegen: {op} cannot be computed inside a kernel here")

    def _reshape_index(self, idx, out_shape, in_shape):
        """Map an index through a reshape group by group: dims are matched into runs with
        equal products, so splitting or merging a dim costs one multiply-add, and div/mod
        appear only where a run really regroups."""
        src, i, j = [], 0, 0
        no, ni = len(out_shape), len(in_shape)
        while i < no or j < ni:
            gi, gj = [i], [j]
            po = out_shape[i] if i < no else 1
            pi = in_shape[j] if j < ni else 1
            i, j = i + 1, j + 1
            while po != pi:
                if po < pi:
                    po *= out_shape[i]
                    gi.append(i)
                    i += 1
                else:
                    pi *= in_shape[j]
                    gj.append(j)
                    j += 1
            gi = [d for d in gi if d < no]
            gj = [d for d in gj if d < ni]
            sub_out = tuple(out_shape[d] for d in gi)
            flat = self.flatten(tuple(idx[d] for d in gi), sub_out) if gi else 0
            if len(gj) == 1:
                src.append(flat)
            elif gj:
                src.extend(self.unflatten(flat, tuple(in_shape[d] for d in gj), bounded=True))
        return tuple(src)


def _kernel_name(kind, fused, source_key):
    ops = [n.op.lower() for n in fused if n.op in ir.ELEMENTWISE | ir.REDUCE]
    label = "_".join(dict.fromkeys(ops))[:40] or ("" if kind in ("matmul", "rand") else "copy")
    kind = "gemm" if kind == "matmul" else kind
    return f"mao_{kind}_{label}_{hashlib.sha1(source_key.encode()).hexdigest()[:8]}".replace("__", "_")


class _Args:
    def __init__(self):
        self.entries, self.names, self.decl = [], {}, []

    def add(self, role, node, readonly=True):
        key = (role, node)
        if key not in self.names:
            prefix = {"out": "out", "in": "in", "var": "v"}[role]
            name = f"{prefix}{sum(1 for e in self.entries if e[0] == role)}"
            self.names[key] = name
            self.entries.append((role, node))
            self.decl.append(("buf" if role != "var" else "scalar", name, node.dtype, readonly))
        return self.names[key]


def lower(group: KernelGroup, is_leaf, materialized, kind: str = "cpu", vector_width: int | None = None) -> KernelSpec:
    """``materialized(n)``: n is stored in a buffer by another kernel of this schedule;
    ``kind``: the device kind ("cpu", "gpu", ...), which picks the GEMM and reduce templates;
    ``vector_width``: float vector width of the CPU GEMM (16, 8, 4 or 1; default: what the
    probes of this kind's devices allow, see set_gemm_vector_width; the runtime narrows a
    spec planned wider, see with_vector_width)."""
    if vector_width is None:
        vector_width = _gemm_vector_width.get(kind, GEMM_VECTOR_WIDTHS[0])
    args = _Args()
    for out in group.outputs:
        args.add("out", out, readonly=False)
    own = set(group.outputs) | ({group.anchor} if group.anchor is not None else set())

    def leaf_name(n):
        if n in own or n.op == "CONST":
            return None
        if n.op == "VAR":
            return args.add("var", n)
        if is_leaf(n) or materialized(n):
            return args.add("in", n)
        return None

    if group.kind == "rand":
        numel = group.anchor.numel
        name, params, source = _named("rand", group, {"numel": numel}, placeholder="mao_rand")
        return KernelSpec(name, "rand", params, source, (("out", group.anchor), ("seed",), ("offset",)),
                          group.outputs, (_round_up(numel, 64),), None, group.fused, {"numel": numel, "name": name})
    if group.kind == "elementwise":
        return _lower_elementwise(group, args, leaf_name)
    if group.kind == "reduce":
        return _lower_reduce(group, args, leaf_name, kind)
    return _lower_matmul(group, args, leaf_name, kind, vector_width)


def _round_up(x, m):
    return max(m, (x + m - 1) // m * m)


def _named(template, group, params, placeholder="mao_kernel"):
    """(name, params with the name, source): the name hashes the source rendered with a
    placeholder name, so equal kernels get equal names; then the source is rendered again
    with its own name."""
    name = _kernel_name(group.kind, group.fused, kernels.render(template, name=placeholder, **params))
    params = dict(params, name=name)
    return name, params, kernels.render(template, **params)


def _finish(group, template, params, display, args, global_size, local_size=None):
    name, params, source = _named(template, group, params)
    return KernelSpec(name, template, params, source, tuple(args.entries), group.outputs,
                      tuple(global_size), local_size, group.fused, dict(display, name=name))


def with_vector_width(spec: KernelSpec, vector_width: int) -> KernelSpec:
    """The same CPU GEMM kernel (name, arguments, launch sizes, panel layout) written with
    ``vector_width``-wide float vectors: the safer variant for a compiler that cannot take
    the wider one. Other kernels, and a GEMM already that narrow, come back unchanged."""
    if spec.template != "gemm" or spec.params["VW"] <= vector_width:
        return spec
    W = spec.params["VW"] * spec.params["NV"]
    params = dict(spec.params, VW=vector_width, NV=W // vector_width)
    return KernelSpec(spec.name, spec.template, params, kernels.render("gemm", **params), spec.args, spec.outputs,
                      spec.global_size, spec.local_size, spec.fused, dict(spec.display, VW=vector_width))


def split_rows(it, rows) -> list | None:
    """A captured launch of a GEMM kernel (engine.launch.Launch) as launches that each
    compute a run of the output's rows, cut at `rows` (row numbers, each rounded up to the
    kernel's block of rows): the same kernel and arguments, each on its part of the grid
    (a global work offset), so every value is the same bits as in the whole launch.  An
    engine-node uses this to send a large weight gradient to the other ranks block by block
    while the rest of it is computed.  Returns [(launch, end row)], or None when the kernel
    is no GEMM whose output rows lie one after another in memory (batched, or computed
    transposed)."""
    from .launch import Launch
    spec = it.spec
    if (spec.template not in ("gemm", "gemm_tiled") or spec.display.get("batch") != 1 or spec.display.get("swapped")
            or it.rand is not None):
        return None
    p = spec.params
    if spec.template == "gemm_tiled":     # dim 1: TM // WM work-items per tile of TM rows
        block, dim, per = p["TM"], 1, p["TM"] // p["WM"]
    else:                                 # dim 0: one work-item per R rows
        block, dim, per = p["R"], 0, 1
    M, Mb = p["M"], p["Mb"]
    cuts = sorted({min(Mb, -(-int(r) // block)) for r in rows} - {0, Mb})
    out = []
    for a, b in zip([0, *cuts], [*cuts, Mb]):
        size, offset = list(it.gsize), [0] * len(it.gsize)
        size[dim], offset[dim] = (b - a) * per, a * per
        out.append((Launch(it.ck, tuple(size), it.lsize, it.args, it.rand, spec, tuple(offset)), min(M, b * block)))
    return out


def _live(stmts, roots) -> list:
    """``stmts`` without those no root (a stored value) depends on, e.g. the index
    arithmetic of a multi-index that every read turned back into the flat index."""
    used = {r for r in roots if isinstance(r, str)}
    kept = []
    for stmt in reversed(stmts):
        if stmt[0] in used:
            kept.append(stmt)
            used.update(a for a in stmt[2] if isinstance(a, str))
    return kept[::-1]


def _lower_elementwise(group, args, leaf_name):
    shape = group.outputs[0].shape
    numel = math.prod(shape)
    em = _Emitter(leaf_name)
    idx = em.unflatten("gid", shape)
    index_stmts = list(em.stmts)
    em.stmts = []
    stores = []
    for out in group.outputs:
        v = _compute(em, out, idx)
        stores.append((args.names[("out", out)], _as_name(v, out.dtype)))
    live = {stmt[0] for stmt in _live(index_stmts + em.stmts, [v for _, v in stores])}
    index_stmts, body = [st for st in index_stmts if st[0] in live], [st for st in em.stmts if st[0] in live]
    # numbered afresh, so that equal kernels are equal text whatever was dropped
    names = {st[0]: f"t{i}" for i, st in enumerate(index_stmts + body)}
    rename = lambda a: names.get(a, a) if isinstance(a, str) else a      # noqa: E731
    index_stmts, body = ([(names[n], op, tuple(map(rename, a)), dt) for n, op, a, dt in block]
                         for block in (index_stmts, body))
    stores = [(buf, rename(v)) for buf, v in stores]
    # launched with exactly numel work-items where that is a whole number of 64-wide groups
    # (or fewer than 64): no bound check, so the source does not name numel and kernels that
    # differ only in their length (the optimizer's update of each parameter) are one kernel,
    # built once
    exact = numel > 0 and (numel % 64 == 0 or numel < 64)
    params = {"numel": numel, "args": args.decl, "index": index_stmts, "body": body, "stores": stores,
              "bounded": not exact}
    display = {"numel": numel, "shape": list(shape), "dtype": group.outputs[0].dtype}
    return _finish(group, "elementwise", params, display, args, (numel,) if exact else (_round_up(numel, 64),))


def _compute(em, out, idx):
    """Value of an output node computed in-kernel (not loaded, even though it's stored)."""
    if out.op in ir.ELEMENTWISE:
        return em.emit(out.op, [em.value(s, idx) for s in out.srcs], out.dtype)
    # a view or a source materialised on its own: compute through the view
    saved = em.leaf_name
    em.leaf_name = lambda n: None if n is out else saved(n)
    try:
        return em.value(out, idx)
    finally:
        em.leaf_name = saved


def _as_name(v, dtype):
    """An SSA name, or a constant written as an OpenCL C literal (inf and nan included)."""
    if isinstance(v, str):
        return v
    if dtype != "float32":
        return str(int(v))
    v = float(v)
    if v != v:
        return "NAN"
    if math.isinf(v):
        return "INFINITY" if v > 0 else "(-INFINITY)"
    return repr(v) + "f"


def _lower_reduce(group, args, leaf_name, kind):
    anchor, out = group.anchor, group.outputs[0]
    src = anchor.srcs[0]
    axes = anchor.arg
    numel = math.prod(out.shape)
    em = _Emitter(leaf_name, anchor, "acc_v")
    idx = em.unflatten("gid", out.shape)
    # an epilogue behind a reshape that drops size-1 dims (schedule.py): the output's flat
    # position is the reduce's, indexed in each one's own shape
    aidx = idx if out.shape == anchor.shape else em.unflatten("gid", anchor.shape)
    index_stmts, em.stmts = em.stmts, []
    red_shape = tuple(src.shape[a] for a in axes)
    ridx = em.unflatten("r", red_shape)
    loop_index, em.stmts = em.stmts, []
    full = list(aidx)
    for a, ri in zip(axes, ridx):
        full[a] = ri
    em_memo_before = dict(em.memo)
    value = em.value(src, tuple(full))
    body, em.stmts = em.stmts, []
    # the epilogue must not reuse values computed inside the loop
    em.memo = em_memo_before
    v = em.anchor_value if out is anchor else _compute(em, out, idx)
    params = {"numel": numel, "args": args.decl, "index": index_stmts, "loop_extent": math.prod(red_shape),
              "loop_index": loop_index, "body": body, "value": _as_name(value, src.dtype),
              "combine": "SUM" if anchor.op == "SUM" else "MAX", "acc_name": "acc_v",
              "epilogue": em.stmts, "stores": [(args.names[("out", out)], _as_name(v, out.dtype))]}
    display = {"numel": numel, "reduce": anchor.op, "axes": list(axes), "in_shape": list(src.shape),
               "out_shape": list(out.shape)}
    L = reduce_plan.group_size(kind, src.shape, axes)
    if L:       # a work-group per output: the same SSA, `gid` is the group's number
        params = dict(params, L=L, UNROLL=reduce_plan.group_unroll())
        return _finish(group, "reduce_group", params, dict(display, L=L), args, (numel * L,), (L,))
    params = dict(params, UNROLL=reduce_plan.plain_unroll(kind, params["loop_extent"]))
    return _finish(group, "reduce", params, display, args, (_round_up(numel, 16),))


def _a_load(em, a, bidx, row, col, name):
    """SSA reading A at (batch, row, col) through its view into ``name`` (implicit GEMM)."""
    em.memo, em.stmts = {}, []
    v = em.value(a, tuple(bidx) + (row, col))
    em.stmts.append((name, "CAST", (v,), "float32"))
    return em.stmts


def _gemm_epilogue(em, anchor, out, bidx, swap=False):
    """SSA of the fused epilogue at (batch, e_m, e_n) with the accumulator as e_acc
    (at (batch, e_n, e_m) when the kernel computes the transposed product)."""
    em.memo, em.stmts = {}, []
    em.anchor, em.anchor_value = anchor, "e_acc"
    v = "e_acc" if out is anchor else _compute(em, out, tuple(bidx) + (("e_n", "e_m") if swap else ("e_m", "e_n")))
    return em.stmts, _as_name(v, out.dtype)


def _tiled_knobs(variant, TM, TN) -> dict:
    """Every knob of the tiled GEMM for a TM x TN tile: the variant's, else the first
    version's (16 x 16 work-items, outputs strided by 16, scalar loads, KB 16). Tile
    sizes in a variant belong to the layout (the panel widths), not to the kernel."""
    first = {"WM": TM // 16, "WN": TN // 16, "KB": 16, "LV": 1, "BLOCK": 0, "VW": 1, "PAD": 0, "DBUF": 0, "MAD": 0}
    knobs = dict(first)
    knobs.update((k, int(v)) for k, v in variant.items() if k in knobs)
    WM, WN, LV, VW, PAD = (knobs[k] for k in ("WM", "WN", "LV", "VW", "PAD"))
    threads = (TM // max(WM, 1)) * (TN // max(WN, 1))
    local = 4 * (knobs["DBUF"] + 1) * knobs["KB"] * (TM + TN + 2 * PAD)
    # a variant chosen for the layout's tile may not fit the rows an implicit A gets
    fits = (WM > 0 and WN > 0 and not TM % WM and not TN % WN and not WM % LV and not WN % LV
            and not TM % VW and not TN % VW and not PAD % VW and not PAD % LV
            and 1 <= threads <= 1024 and local <= 48 * 1024)
    return knobs if fits else first


def _lower_matmul(group, args, leaf_name, kind, vector_width=16):
    anchor, out = group.anchor, group.outputs[0]
    a, bp = anchor.srcs
    M, N, K, R_packed, variant = anchor.arg
    variant = dict(variant)     # a device lowering's kernel choices (engine/tune.py); {} = defaults
    W = bp.shape[-1]
    batch = anchor.shape[:-2]
    nb = math.prod(batch)
    a_packed = R_packed > 0
    b_name = leaf_name(bp)
    a_name = leaf_name(a) if a_packed else None
    assert b_name is not None and (a_name is not None or not a_packed), "scheduler must materialise the panels"
    em = _Emitter(leaf_name)
    bidx = em.unflatten("bz", tuple(batch)) if batch else ()
    batch_index, em.stmts = em.stmts, []
    common = {"M": M, "N": N, "K": K, "args": args.decl, "a_packed": a_packed, "a_name": a_name,
              "b_name": b_name, "out_name": args.names[("out", out)], "batch_index": batch_index}
    display = {"M": M, "N": N, "K": K, "batch": nb, "a_packed": a_packed,
               "epilogue_ops": [n.op for n in group.fused if n.op in ir.ELEMENTWISE]}
    Nb = bp.shape[-3] if len(bp.shape) >= 3 else 0     # (no panels when B is read in place)

    if kind == "gpu":   # local-memory tiles; the panel widths are the tile sizes
        TM = R_packed if a_packed else 128
        Mb = -(-M // TM)
        a_load = [] if a_packed else _a_load(em, a, bidx, "am", "ak", "a_val")
        epilogue, value = _gemm_epilogue(em, anchor, out, bidx)
        knobs = _tiled_knobs(variant, TM, W)
        params = dict(common, TM=TM, TN=W, Mb=Mb, Nb=Nb, a_load=a_load, epilogue=epilogue, value=value, **knobs)
        TX, TY = W // knobs["WN"], TM // knobs["WM"]
        return _finish(group, "gemm_tiled", params, dict(display, TM=TM, TN=W, **knobs), args,
                       (Nb * TX, Mb * TY, nb), (TX, TY, 1))

    strip = variant.get("B_ROW")
    if strip:           # B [*B, K, N] read in place: panel nb is columns nb*W.. of every row
        W, b_step = int(strip), N
        Nb = -(-N // W)
        b_base = f"bz * {K * N} + nb * {W}"
    else:               # packed panels [*B, Nb, K, W]
        b_step = W
        b_base = f"(bz * {Nb} + nb) * {K * W}"
    R = R_packed if a_packed else min(8, M)
    Mb = -(-M // R)
    a_rows = [] if a_packed else [_a_load(em, a, bidx, f"am{r}", "k", f"a{r}") for r in range(R)]
    swap = bool(variant.get("SWAP"))    # the kernel computes C^T: the output is [*B, N, M]
    epilogue, value = _gemm_epilogue(em, anchor, out, bidx, swap)
    out_index = f"(bz * {N} + e_n) * {M} + e_m" if swap else f"(bz * {M} + e_m) * {N} + e_n"
    VW = next(v for v in GEMM_VECTOR_WIDTHS if v <= vector_width and W % v == 0)
    params = dict(common, R=R, VW=VW, NV=W // VW, Mb=Mb, Nb=Nb, a_rows=a_rows, epilogue=epilogue, value=value,
                  b_base=b_base, b_step=b_step, out_index=out_index)
    # one work-item per work-group: the block is already explicit vectors, and PoCL compiles
    # the work-group function of a wider group (its loop over work-items) for nothing
    local = (1, 1, 1)
    return _finish(group, "gemm", params, dict(display, R=R, W=W, VW=VW, b_in_place=bool(strip), swapped=swap), args,
                   (Mb, Nb, nb), local)
