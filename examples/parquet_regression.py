"""A regression MLP on a Parquet table, written as a PyTorch script: read with pyarrow,
standardize, TensorDataset + DataLoader, MSELoss, Adam, StepLR, evaluation.

The framework imports between the markers are the only lines that differ from the same
script in PyTorch (tests/test_examples_ports.py swaps them for torch's and compares).

    python examples/parquet_regression.py                 # writes a synthetic table first
    python examples/parquet_regression.py --data my.parquet --target price
    python examples/parquet_regression.py --tiny
"""
import argparse
import os
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# >>> framework imports
import engine as torch
from engine import nn, optim
from engine.lr_scheduler import StepLR
from engine.utils.data import TensorDataset, DataLoader
# <<< framework imports


def write_synthetic(path, rows=2000, seed=0):
    rng = np.random.default_rng(seed)
    cols = {f"x{i}": rng.standard_normal(rows) for i in range(6)}
    x = np.stack(list(cols.values()), 1)
    y = 2.0 * x[:, 0] - x[:, 1] * x[:, 2] + np.sin(x[:, 3]) + 0.1 * rng.standard_normal(rows)
    pq.write_table(pa.table(dict(cols, target=y)), path)
    return path


def read_table(path, target):
    t = pq.read_table(path)
    x = np.stack([t.column(c).to_numpy() for c in t.column_names if c != target], 1).astype(np.float32)
    y = t.column(target).to_numpy().astype(np.float32)[:, None]
    return x, y


def run(path, target="target", epochs=5, batch_size=64, lr=1e-2, hidden=64, shuffle=True, init_state=None, seed=0):
    """Train; returns (model, per-step losses, held-out MSE)."""
    torch.manual_seed(seed)
    x, y = read_table(path, target)
    split = int(len(x) * 0.8)
    mean, std = x[:split].mean(0), x[:split].std(0) + 1e-6
    x = (x - mean) / std
    loader = DataLoader(TensorDataset(torch.tensor(x[:split]), torch.tensor(y[:split])),
                        batch_size=batch_size, shuffle=shuffle)
    model = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, 1))
    if init_state is not None:
        model.load_state_dict({k: torch.tensor(v) for k, v in init_state.items()})
    loss_fn = nn.MSELoss()
    opt = optim.Adam(model.parameters(), lr=lr)
    sched = StepLR(opt, step_size=2, gamma=0.5)
    losses = []
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        sched.step()
    model.eval()
    with torch.no_grad():
        mse = loss_fn(model(torch.tensor(x[split:])), torch.tensor(y[split:])).item()
    return model, losses, mse


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="a Parquet file (default: a synthetic one in a temporary folder)")
    p.add_argument("--target", default="target")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--tiny", action="store_true", help="200 rows, one epoch")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = a.data or write_synthetic(os.path.join(tmp, "data.parquet"), rows=200 if a.tiny else 2000)
        _, losses, mse = run(path, a.target, epochs=1 if a.tiny else a.epochs, hidden=8 if a.tiny else 64)
    print(f"{len(losses)} steps, first loss {losses[0]:.4f}, last loss {losses[-1]:.4f}, held-out MSE {mse:.4f}")


if __name__ == "__main__":
    main()
