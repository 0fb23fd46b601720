"""Reductions: how they are cut and lowered per device (engine/reduce_plan.py), and their
values and gradients against float64 numpy under every plan, the GPU's work-group
template included (forced here, it runs on PoCL too)."""
import math

import numpy as np
import pytest

import engine
from engine import realize, reduce_plan
from engine.bounds import prove
from engine.buffers import is_leaf
from engine.codegen import lower
from engine.plan_cache import PlanCache
from engine.reduce_plan import Split, force, group_size, split
from engine.schedule import schedule
from helpers import check_op, random_input

# name -> forced choices; "device" leaves everything to the device (PoCL: plain template)
MODES = {
    "device": {},
    "group": {"group": 64, "parts": 3},          # work-group template, ragged 3-way split
    "group-one-stage": {"group": 256, "parts": 1},
    "plain-split": {"group": 0, "parts": 5, "unroll": 1},
}


@pytest.fixture(params=list(MODES))
def mode(request, monkeypatch):
    # lowered kernels are remembered by graph structure, not by the forced choices
    monkeypatch.setattr(realize, "_plans", PlanCache())
    with force(**MODES[request.param]):
        yield request.param


def _f32(x):
    return x.astype(np.float32).astype(np.float64)


# --- the planner (pure) -----------------------------------------------------------------

def test_gpu_sum_of_2_26_is_a_few_groups_per_compute_unit_without_padding():
    s = split("gpu", 132, 1, 1 << 26, inner=True)
    assert s == Split(1024, 1 << 16)                   # 8 groups per CU, rounded to a power of two
    assert group_size("gpu", (1024, 1 << 16), (1,)) == reduce_plan.GROUP
    assert group_size("gpu", (1024, 1), (0,)) == reduce_plan.GROUP     # the second stage: one group


@pytest.mark.parametrize("kind,units", [("gpu", 132), ("gpu", 7), ("cpu", 2), ("cpu", 16)])
@pytest.mark.parametrize("outputs,extent,inner", [(1, 40001, True), (3, 1 << 20, True), (1, 999_983, True),
                                                  (512, 65536, False), (10, 100_003, False), (1, 4000, True)])
def test_split_covers_the_extent_with_one_padded_chunk_at_most(kind, units, outputs, extent, inner):
    s = split(kind, units, outputs, extent, inner)
    assert s.parts * s.chunk >= extent and (s.parts - 1) * s.chunk < extent
    if s.parts > 1:       # a split gives each compute unit work, and no chunk is tiny
        assert s.parts * outputs >= min(units, extent // s.chunk) and s.chunk >= 16


def test_short_or_wide_reductions_stay_one_kernel():
    assert split("cpu", 2, 1, 4000, True).parts == 1             # a CPU launch costs more than it saves
    assert split("cpu", 2, 4096, 1 << 16, True).parts == 1       # enough rows for both cores
    assert split("gpu", 132, 65536, 1024, True).parts == 1       # a group per row fills the GPU
    assert split("cpu", 2, 512, 512, False).parts == 1            # a short column walk stays in cache
    assert split("gpu", 132, 512, 128, False).parts == 1          # a bias gradient: one group kernel


def test_cpu_column_walks_are_cut_short():
    assert split("cpu", 2, 512, 16384, False) == Split(256, 64)   # rows a neighbour reads again


def test_template_choice_by_kind_and_axis():
    assert group_size("cpu", (8, 1 << 20), (1,)) == 0             # a CPU streams its row
    assert group_size("gpu", (8, 1 << 20), (1,)) == 256
    assert group_size("gpu", (8, 100), (1,)) == 64               # the largest power of two inside
    assert group_size("gpu", (8, 10), (1,)) == 0                 # short rows: a work-item each
    assert group_size("gpu", (1 << 16, 8192), (0,)) == 0         # across rows: columns coalesce already
    assert group_size("gpu", (16384, 16), (0,)) == 256           # ... unless too few to fill the GPU
    assert group_size("gpu", (64, 1000, 1), (1,)) == 256         # a trailing 1 is not the innermost axis


def test_gpu_lowering_picks_the_group_template_and_its_loads_are_proved(rng):
    """Lowered for a GPU without one: each kernel passes the bounds proof that runs before
    every build, and a REDUCE over a long innermost axis is a work-group per output."""
    x = engine.tensor(random_input(rng, (6, 3000)).astype(np.float32))
    y = engine.tensor(random_input(rng, (6, 3000)).astype(np.float32))
    with force(parts=1):    # one stage whatever the default device would split: the lowering is tested here
        cases = {"rows": (x * y).sum(1).sqrt(), "columns": (x * y).sum(0), "all": x[:2].max(),
                 "padded": x.reshape(3, 6000)[:, 1:].exp().sum(1) * 2.0,
                 "few columns": x.reshape(1125, 16)[:1000].sum(0)}     # the second stage of a column sum
    for what, t in cases.items():
        groups = schedule([t.node], is_leaf)
        made = {o for g in groups for o in g.outputs}
        specs = [lower(g, is_leaf, made.__contains__, "gpu") for g in groups]
        for s in specs:
            prove(s)
        want = "reduce" if what == "columns" else "reduce_group"
        assert [s.template for s in specs if s.template.startswith("reduce")] == [want], what
        group = next(s for s in specs if s.template.startswith("reduce"))
        if want == "reduce_group":
            assert group.local_size == (group.params["L"],)
            assert group.global_size == (group.params["numel"] * group.params["L"],)


# --- values and gradients on this device, under every plan ------------------------------

@pytest.mark.parametrize("shape,dim", [((40001,), None), ((37, 300), 1), ((37, 300), 0), ((3, 50, 41), (0, 2)),
                                       ((33000, 3), 0), ((5, 7), 1)])
def test_sum_max_mean_match_numpy(rng, mode, shape, dim):
    x = random_input(rng, shape)
    t = engine.tensor(x.astype(np.float32))
    axis = dim if dim is None or isinstance(dim, int) else tuple(dim)
    scale = math.sqrt(x.size)     # float32 sums drift with the number of terms
    np.testing.assert_allclose(t.sum(dim).numpy(), _f32(x).sum(axis), rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(t.mean(dim).numpy(), _f32(x).mean(axis), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(t.amax(dim).numpy(), x.astype(np.float32).max(axis))


def test_max_of_negative_values_never_sees_the_padding(mode):
    x = -np.linspace(1.0, 3.0, 40003)        # every value below the zero a padded chunk holds
    t = engine.tensor(x.astype(np.float32))
    assert t.max().item() == np.float32(-1.0)
    np.testing.assert_array_equal(t.reshape(1, 40003).amax(1).numpy(), [np.float32(-1.0)])


def test_fused_input_and_epilogue(rng, mode):
    x, y = random_input(rng, (9, 2501)), random_input(rng, (9, 2501))
    tx, ty = engine.tensor(x.astype(np.float32)), engine.tensor(y.astype(np.float32))
    with engine.profile() as p:
        got = ((tx * ty).sum(1, keepdim=True) * 0.05 + 30.0).sqrt().numpy()
    np.testing.assert_allclose(got, np.sqrt((_f32(x) * _f32(y)).sum(1, keepdims=True) * 0.05 + 30.0), rtol=1e-5)
    # the product is read inside the reduction and the epilogue runs in its last kernel
    stages = 2 if split(tx.device.kind, tx.device.cl_device.max_compute_units, 9, 2501, True).parts > 1 else 1
    assert len(p.kernels) == stages and all(k["template"].startswith("reduce") for k in p.kernels)
    long = (tx.reshape(-1) * ty.reshape(-1)).sum().item()
    assert long == pytest.approx(float((_f32(x) * _f32(y)).sum()), rel=1e-5, abs=1e-3)
    mask = engine.tensor((x > 0.3).astype(np.float32)) > 0.5         # a bool input, summed
    assert mask.reshape(-1).sum().item() == int((x > 0.3).sum())


def test_gradients_of_long_ragged_reductions(rng, mode):
    x = random_input(rng, (40001,)).astype(np.float32)
    for op, want in (("sum", np.ones(x.size)), ("mean", np.full(x.size, 1 / x.size)),
                     ("max", (x == x.max()).astype(np.float64))):
        t = engine.tensor(x, requires_grad=True)
        (getattr(t, op)() * 3.0).backward()
        np.testing.assert_allclose(t.grad.numpy(), 3.0 * want, rtol=1e-6, err_msg=op)


@pytest.mark.parametrize("dim", [0, 1])
def test_gradients_through_fused_reductions_match_finite_differences(rng, mode, dim):
    x, y = random_input(rng, (6, 70)), random_input(rng, (6, 70))
    check_op(lambda a, b: (a * b).sum(dim).exp(), lambda a, b: np.exp((a * b).sum(dim)), [0.3 * x, 0.3 * y],
             rtol=1e-5, grad_rtol=1e-3, grad_atol=1e-4)
    check_op(lambda a: a.amax(dim) * 2.0, lambda a: a.max(dim) * 2.0, [x])
