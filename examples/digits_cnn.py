"""A small CNN on scikit-learn's 8x8 handwritten digits, written as a PyTorch script.

The framework imports between the markers are the only lines that differ from the same
script in PyTorch (tests/test_examples_ports.py swaps them for torch's and compares).

    python examples/digits_cnn.py            # a few epochs, prints loss and accuracy
    python examples/digits_cnn.py --tiny     # seconds
"""
import argparse

import numpy as np

# >>> framework imports
import engine as torch
from engine import nn, optim
from engine.nn import functional as F
from engine.utils.data import TensorDataset, DataLoader
# <<< framework imports


class Net(nn.Module):
    def __init__(self, width=16, dropout=0.25):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(dropout)
        self.fc1 = nn.Linear(2 * width * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = self.drop(x.flatten(1))
        return self.fc2(F.relu(self.fc1(x)))


def load_digits(n=None):
    from sklearn.datasets import load_digits as sk_digits
    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]      # [N, 1, 8, 8]
    y = d.target.astype(np.int64)
    if n:
        x, y = x[:n], y[:n]
    return x, y


def run(epochs=3, batch_size=64, lr=1e-3, width=16, dropout=0.25, n=None, shuffle=True, init_state=None, seed=0):
    """Train; returns (model, per-step losses, held-out accuracy)."""
    torch.manual_seed(seed)
    x, y = load_digits(n)
    split = int(len(x) * 0.8)
    train = TensorDataset(torch.tensor(x[:split]), torch.tensor(y[:split]))
    loader = DataLoader(train, batch_size=batch_size, shuffle=shuffle)
    model = Net(width, dropout)
    if init_state is not None:
        model.load_state_dict({k: torch.tensor(v) for k, v in init_state.items()})
    opt = optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        pred = model(torch.tensor(x[split:])).argmax(1)
        acc = (pred == torch.tensor(y[split:])).float().mean().item()
    return model, losses, acc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--tiny", action="store_true", help="200 images, one epoch")
    a = p.parse_args(argv)
    if a.tiny:
        _, losses, acc = run(epochs=1, n=200, width=4)
    else:
        _, losses, acc = run(epochs=a.epochs)
    print(f"{len(losses)} steps, first loss {losses[0]:.4f}, last loss {losses[-1]:.4f}, held-out accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
