"""Lowering for one device: the device-neutral graph a user builds (and a step program
carries) rewritten into the graph that device runs, just before scheduling.

Each ``MATMUL(a [*B, M, K], b [*B, K, N])`` becomes views that lay its operands out for
the device's GEMM template and a ``GEMM`` node over them (``ir.gemm``):

- the tile (``tune.gemm_tile``, via ``tune.matmul_layout``) and the kernel variant
  (``tune.gemm_variant`` where the tuning module has it);
- on a CPU, whether B is read in place instead of packed (``B_ROW``: a B of at most
  ``CPU_B_IN_PLACE_MAX`` floats whose N is whole strips or at least ``RAGGED_STRIPS_FROM``
  of them; a permute chain on B is composed first), and whether ``x @ w.T`` runs as the
  transposed product GEMM(w, x.T) (``SWAP``: fewer rows than outputs, K of at least
  ``SWAP_K_FROM``), so the per-step copy is x.T rather than the weight's transpose;
- whether A is packed into panels: a GPU packs (its work-groups load contiguous rows), a
  CPU streams A's rows in place; an A that reads a sliding WINDOW (a convolution's im2col
  view, KH*KW times larger than the input it reads) is read through its view instead
  (implicit GEMM) unless, on a GPU, it is a transpose of one (the weight gradient's
  cols^T), whose rows a work-group would load strided;
- split-K: a GEMM with fewer output tiles than ``SPLIT_BELOW`` per compute unit and a K
  of at least ``SPLIT_K_FROM`` is a batched GEMM over S slices of K (enough for ``FILL``
  tiles per unit) followed by a SUM over the slices (S a power of two, each slice at
  least ``SPLIT_K_MIN`` long; the SUM takes the MATMUL's epilogue), so a skinny product
  (a convolution's weight gradient, a 1024 x 10 logits layer) fills the device. Only the
  summation order changes.

Every other node is rebuilt over its lowered sources (hash-consing keeps whatever does
not sit above a MATMUL identical). Nodes that already have values (``is_leaf``) are
never rewritten: they are read from their buffers.
"""
from __future__ import annotations

import math

from . import ir, tune

__all__ = ["lower", "lower_matmul", "split_k", "device_key", "compute_units", "FILL", "SPLIT_BELOW", "SPLIT_K_MIN",
           "SPLIT_K_FROM", "CPU_B_IN_PLACE_MAX", "RAGGED_STRIPS_FROM", "SWAP_K_FROM"]

# output tiles per compute unit below which a GEMM is split along K: a GPU whose tiles
# already fill every SM once keeps them (on the H200 the 1024 x 4096 products of the big
# MLP, 256 tiles on 132 SMs, were split in 2 and lost their fused epilogues; bench/NOTES.md);
# a CPU splits while its cores would get unequal shares
SPLIT_BELOW = {"gpu": 1, "cpu": 2}
# output tiles per compute unit a split aims for
FILL = 2
# the shortest K slice worth its own pass (writing S partial products and summing them
# costs about S*M*N reads and writes; a slice this long keeps that under ~1% of the GEMM)
SPLIT_K_MIN = {"gpu": 256, "cpu": 512}
# a K shorter than this is quick per tile anyway: a second launch and the partial products'
# round trip through memory would cost more than the idle compute units save
SPLIT_K_FROM = 2048
# a CPU reads B in place (no packing copy) when it holds at most this many floats: a bigger B's rows are far apart (4 KiB for n=1024), its panel's
# k rows fall into few cache sets, and in place ran 2-2.5x slower than packed panels at
# n=1024 while the MLP's 784 x 512 weights ran ~1.5x faster in place (bench/NOTES.md)
CPU_B_IN_PLACE_MAX = 1 << 19
# strips of W columns from which a B whose N is not whole strips is read in place anyway
RAGGED_STRIPS_FROM = 8
# the shortest K for which a CPU computes x @ w.T as (w @ x.T).T: the transposed store
# costs about as much as a short product (a 128 x 512 output with K = 10 took ~12x longer
# swapped than the plain GEMM after its 5 K-float copy)
SWAP_K_FROM = 128
# rows of C a tiled GPU work-group computes when A is read through its view (codegen's TM)
_GPU_IMPLICIT_ROWS = 128


def compute_units(device) -> int:
    """The device's compute units (SMs of a GPU, cores of a PoCL CPU); an explicit
    ``compute_units`` attribute (a device description in tests) wins."""
    units = getattr(device, "compute_units", None)
    if units is None:
        cl_device = getattr(device, "cl_device", None)
        units = getattr(cl_device, "max_compute_units", 1) if cl_device is not None else 1
    return max(int(units), 1)


def device_key(device) -> tuple:
    """What a lowering (and the kernels planned from it) depends on besides the graph: the
    device's kind, identity and compute units, the split-K settings of this module, and the
    state of the tuning module's choices (a tile forced while ``engine tune`` searches, the
    tuning database), so a plan remembered by the neutral graph's structure is never one
    lowered under other tiles or splits."""
    split = (FILL, SPLIT_K_FROM, tuple(sorted(SPLIT_BELOW.items())), tuple(sorted(SPLIT_K_MIN.items())),
             CPU_B_IN_PLACE_MAX, RAGGED_STRIPS_FROM, SWAP_K_FROM)
    return device.kind, getattr(device, "identity", ""), compute_units(device), split, _tuning_state()


def _tuning_state() -> tuple:
    """What tune's choices depend on besides shapes and the device: the tile forced by
    ``tune.override`` (read from its stack) and the database as loaded (a save replaces it)."""
    db = tune.load_db()
    forced = tuple(repr(t) for t in getattr(tune, "_override", ()))   # tune.override's stack
    return forced, id(db), len(db)


def lower(targets, device, is_leaf=lambda n: n.op in ir.SOURCE, origins: dict | None = None) -> list:
    """``targets`` (device-neutral) as the nodes ``device`` computes, in the same order.
    ``origins``, when given, receives device node -> the neutral node it stands for
    (the views, GEMM and SUM made for a MATMUL map to that MATMUL)."""
    tset = set(targets)
    stop = lambda n: n not in tset and is_leaf(n)  # noqa: E731  (a target is always computed)
    order = ir.toposort(targets, stop=stop)
    walked = set(order) if origins is not None else ()
    new: dict = {}
    for n in order:
        if n.op == "MATMUL" and not stop(n):
            a, b = (new.get(s, s) for s in n.srcs)
            out = new[n] = lower_matmul(a, b, device, stop)
            if origins is not None:     # what this MATMUL's lowering made (reshapes may skip a view of a or b)
                known = lambda x: x is a or x is b or x in origins or x in walked  # noqa: E731
                for m in ir.toposort([out], stop=known):
                    if not known(m):
                        origins[m] = n
        elif n.srcs and not stop(n) and any(s in new for s in n.srcs):
            out = new[n] = ir.with_srcs(n, (new.get(s, s) for s in n.srcs))
            if origins is not None:
                origins[out] = n
    return [new.get(t, t) for t in targets]


def lower_matmul(a: ir.Node, b: ir.Node, device, is_leaf=lambda n: n.op in ir.SOURCE) -> ir.Node:
    """MATMUL(a, b) as ``device`` computes it: [*B, M, N], from panel views and GEMM nodes."""
    *batch, M, K = a.shape
    N = b.shape[-1]
    b = _fold_permutes(b)
    if _swap_pays(a, b, device) and not _reads_window(a, is_leaf):     # (never store an im2col matrix)
        return _swapped(a, b, device, is_leaf)
    tile, pack_a = tune.matmul_layout(a.shape, b.shape, device)
    if _reads_window(a, is_leaf) and not (device.kind == "gpu" and _transposed(a)):
        pack_a = False
    S = split_k(M, N, K, math.prod(batch), tile, pack_a, device)
    # the tile and variant of the whole product, also for its slices: S was chosen for them
    variant = _variant(M, N, K, math.prod(batch), device)
    # a CPU reads B's rows in place: a k step's W columns are one contiguous run either
    # way, and the per-step packing copy (of every weight, activation and gradient a GEMM
    # reads as B) goes away; a ragged last strip (N not whole tiles) is read column by
    # column, so only where it is a small part of B
    in_place_b = (device.kind != "gpu" and K * N <= CPU_B_IN_PLACE_MAX
                  and (N % tile[1] == 0 or N >= RAGGED_STRIPS_FROM * tile[1]))
    if S == 1:
        return _gemm(a, b, tile, pack_a, variant, in_place_b)
    nb = len(batch)
    batch = tuple(batch)
    keep, lead = ((0, 0),) * nb, tuple(range(nb))
    Kc = -(-K // S)
    a = ir.pad(a, keep + ((0, 0), (0, S * Kc - K)))
    a = ir.permute(ir.reshape(a, batch + (M, S, Kc)), lead + (nb + 1, nb, nb + 2))     # [*B, S, M, Kc]
    b = ir.reshape(ir.pad(b, keep + ((0, S * Kc - K), (0, 0))), batch + (S, Kc, N))   # [*B, S, Kc, N]
    part = _gemm(a, b, tile, pack_a, variant, in_place_b)                             # [*B, S, M, N]
    return ir.reshape(ir.reduce("SUM", part, (nb,)), batch + (M, N))


def split_k(M: int, N: int, K: int, batch: int, tile, pack_a: bool, device) -> int:
    """Slices of K for a GEMM of ``batch`` [M, K] @ [K, N] products on ``device``: 1 when
    its output tiles already give every compute unit ``SPLIT_BELOW`` of them, or K is short;
    else enough slices for ``FILL`` tiles per unit."""
    R, W = tile
    if device.kind == "gpu":
        rows = R if pack_a else _GPU_IMPLICIT_ROWS
    else:
        rows = R if pack_a else min(8, M)      # codegen's register block for an implicit A
    tiles = batch * -(-M // rows) * -(-N // W)
    units = compute_units(device)
    if K < SPLIT_K_FROM or tiles >= SPLIT_BELOW.get(device.kind, SPLIT_BELOW["cpu"]) * units:
        return 1
    shortest = SPLIT_K_MIN.get(device.kind, SPLIT_K_MIN["cpu"])
    S = 1
    while tiles * S < FILL * units and 2 * S * shortest <= K:
        S *= 2
    return S


def _gemm(a, b, tile, pack_a, variant, in_place_b=False) -> ir.Node:
    """The panel views of ``a`` [*B, M, K] and ``b`` [*B, K, N] and the GEMM node over
    them: B as panels [*B, N/W, K, W] (``in_place_b``: B as it is, its rows read W
    columns at a time); with ``pack_a``, A as panels [*B, M/R, K, R]. M and N are
    zero-padded up to whole tiles."""
    *batch, M, K = a.shape
    N = b.shape[-1]
    R, W = tile
    batch = tuple(batch)
    nb = len(batch)
    keep, lead = ((0, 0),) * nb, tuple(range(nb))
    if in_place_b:      # B's rows read in place, W columns at a time (no packing copy)
        bp, variant = b, dict(variant, B_ROW=W)
    else:
        bp = ir.pad(b, keep + ((0, 0), (0, -N % W)))
        bp = ir.permute(ir.reshape(bp, batch + (K, bp.shape[-1] // W, W)), lead + (nb + 1, nb, nb + 2))
    if pack_a:
        ap = ir.pad(a, keep + ((0, -M % R), (0, 0)))
        a = ir.permute(ir.reshape(ap, batch + (ap.shape[-2] // R, R, K)), lead + (nb, nb + 2, nb + 1))
    return ir.gemm(a, bp, (M, N, K, R if pack_a else 0), variant)


def _variant(M, N, K, batch, device) -> dict:
    """The kernel variant the tuning module picks for this GEMM ({} = the template's defaults)."""
    pick = getattr(tune, "gemm_variant", None)
    return dict(pick(M, N, K, batch, device) or {}) if pick is not None else {}


def _swap_pays(a, b, device) -> bool:
    """A CPU computes C = A @ B as the transposed product C^T = B^T @ A^T, stored
    transposed by its epilogue, when B is a transposed view (a weight ``w`` [N, K] in
    ``x @ w.T``) and A is the smaller operand: B^T is then ``w`` itself, whose rows the
    kernel reads in place as its A, and the one copy the product needs is A^T (M x K
    floats) instead of B (K x N)."""
    if device.kind == "gpu" or len(a.shape) < 2 or not _transposed(b):
        return False
    *batch, M, K = a.shape
    N = b.shape[-1]
    nb = len(batch)
    if (b.arg != tuple(range(nb)) + (nb + 1, nb) or M >= N or K < SWAP_K_FROM
            or K * M > CPU_B_IN_PLACE_MAX):
        return False
    tile, _ = tune.matmul_layout(b.shape[:-2] + (N, K), a.shape[:-2] + (K, M), device)
    return split_k(N, M, K, math.prod(batch), tile, False, device) == 1 and M % tile[1] == 0


def _swapped(a, b, device, is_leaf) -> ir.Node:
    """C = A @ B as GEMM(B^T, A^T) with the SWAP variant (see _swap_pays)."""
    *batch, M, K = a.shape
    N = b.shape[-1]
    nb = len(batch)
    swap = tuple(range(nb)) + (nb + 1, nb)
    bt = _fold_permutes(ir.permute(b, swap))                     # [*B, N, K]: the weight itself
    at = ir.permute(a, swap)                                     # [*B, K, M]
    tile, _ = tune.matmul_layout(bt.shape, at.shape, device)
    variant = dict(_variant(N, M, K, math.prod(batch), device), SWAP=1)
    return _gemm(bt, at, tile, False, variant, True)


def _fold_permutes(x) -> ir.Node:
    """``x`` with a chain of permutes composed into one (none where they cancel): the
    backward pass of ``x @ w.T`` multiplies by ``w.T.T``, which is ``w`` itself, read in
    place instead of copied."""
    order = tuple(range(len(x.shape)))
    base = x
    while base.op == "PERMUTE":
        order = tuple(base.arg[o] for o in order)
        base = base.srcs[0]
    if base is x or base is x.srcs[0]:
        return x
    return ir.permute(base, order)


def _reads_window(a, is_leaf) -> bool:
    """A is a view of a sliding window (a convolution's im2col matrix) of a stored value."""
    while a.op in ir.MOVEMENT and not is_leaf(a):
        if a.op == "WINDOW":
            return True
        a = a.srcs[0]
    return False


def _transposed(a) -> bool:
    """A's rows are not its source's rows: a permute that moves the last dim."""
    return a.op == "PERMUTE" and a.arg[-1] != len(a.shape) - 1
