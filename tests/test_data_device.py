"""DataLoader batches arrive as engine tensors on the device, uploaded by the prefetch thread."""
import numpy as np

import engine
from engine.data import ArrowDataset, DataLoader, write_parquet


def test_batches_are_device_tensors_with_the_rows_of_the_numpy_loader(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, 10, 300)
    write_parquet(tmp_path / "d.parquet", x, y, row_group_size=64)
    ds = ArrowDataset(tmp_path / "d.parquet")
    device = engine.default_device()
    on_device = list(DataLoader(ds, 32, seed=1, device=device))
    on_host = list(DataLoader(ds, 32, seed=1, as_numpy=True))
    assert len(on_device) == len(on_host) == 10
    for (xt, yt), (xn, yn) in zip(on_device, on_host):
        assert isinstance(xt, engine.Tensor) and isinstance(yt, engine.Tensor)
        assert np.dtype(xt.dtype) == np.float32 and np.dtype(yt.dtype) == np.int64 and xt.shape == xn.shape
        np.testing.assert_array_equal(xt.numpy(), xn)
        np.testing.assert_array_equal(yt.numpy(), yn)
    # the tensors feed the engine directly
    logits = engine.nn.Linear(16, 10)(on_device[0][0].reshape(32, 16))
    loss = engine.nn.functional.cross_entropy(logits, on_device[0][1])
    assert np.isfinite(loss.item())
