"""The bundled digits, written to Parquet by `engine data digits`, train through the
streaming DataLoader (device tensors, a compiled step) like the in-memory example."""
import numpy as np

import engine
from engine.data import ArrowDataset, DataLoader
from engine.data.cli import main
from engine.examples import digits
from engine.nn import functional as F


def test_train_digits_from_parquet(tmp_path):
    path = tmp_path / "digits.parquet"
    assert main(["digits", str(path), "--row-group-size", "256"]) == 0
    engine.manual_seed(0)
    model = digits.build_model("mlp")
    opt = engine.optim.Adam(model.parameters(), lr=2e-3)

    step = engine.training_step(model, F.cross_entropy, opt)

    loader = DataLoader(ArrowDataset(path), batch_size=64, shuffle=True, seed=0, drop_last=True)
    epoch_losses = []
    for _ in range(8):
        epoch_losses.append(np.mean([step(x, y).item() for x, y in loader]))
    assert epoch_losses[-1] < 0.25 * epoch_losses[0], epoch_losses
    x, y = next(iter(DataLoader(ArrowDataset(path), batch_size=1797, shuffle=False, as_numpy=True)))
    acc = digits.evaluate(model, x, y)
    assert acc >= 0.95, acc
