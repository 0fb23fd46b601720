"""Every generated load is proved inside its buffer before a kernel is built: IR that reads
outside (made by hand here, past the checks of ``ir``'s constructors, as a hostile program
might) is refused with BoundsError and nothing runs."""
import numpy as np
import pytest

import engine
from engine import ir
from engine.bounds import BoundsError


def _tensor_of(node, like):
    return engine.Tensor(node, like.device)


def test_honest_views_pass():
    x = engine.tensor(np.arange(24, dtype=np.float32).reshape(4, 6))
    y = x.T[1:, ::2].reshape(-1)[3:] * 2.0 + x.pad(((1, 1), (0, 0)))[2:4].sum()
    assert np.isfinite(y.numpy()).all()


def test_a_slice_past_the_end_is_refused():
    x = engine.tensor(np.arange(6, dtype=np.float32))
    bad = ir.Node("SHRINK", (x.node,), ((2, 9, 1),), (7,), "float32")      # 7 elements of a 6-element buffer
    with pytest.raises(BoundsError, match="may read outside its 6 elements"):
        (_tensor_of(bad, x) * 2.0).numpy()


def test_a_negative_dilation_window_is_refused():
    x = engine.tensor(np.arange(16, dtype=np.float32).reshape(1, 16))
    bad = ir.Node("WINDOW", (x.node,), ((3,), (1,), (-4,)), (1, 14, 3), "float32")
    with pytest.raises(BoundsError):
        (_tensor_of(bad, x) + 1.0).sum().numpy()


def test_a_kernel_of_the_same_source_is_proved_again_for_other_buffers():
    """An elementwise kernel launched with exactly its length names no length (codegen), so
    an honest 64-element slice and a hostile 128-element one of a 128-element buffer are
    the same source, the same kernel name: the proof of the first must not stand for the
    second, which would read two elements past the end."""
    honest = engine.tensor(np.arange(66, dtype=np.float32))
    ok = ir.Node("SHRINK", (honest.node,), ((2, 66, 1),), (64,), "float32")
    np.testing.assert_array_equal((_tensor_of(ok, honest) * 2.0).numpy(), np.arange(2, 66) * 2.0)
    x = engine.tensor(np.arange(128, dtype=np.float32))
    bad = ir.Node("SHRINK", (x.node,), ((2, 130, 1),), (128,), "float32")     # 128 elements from index 2
    with pytest.raises(BoundsError, match="may read outside its 128 elements"):
        (_tensor_of(bad, x) * 2.0).numpy()
