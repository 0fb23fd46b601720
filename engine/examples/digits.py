"""The bundled example: scikit-learn's 1,797 handwritten 8x8 digits, an MLP and a small CNN."""
from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np
from tqdm import tqdm

from .. import nn
from ..jit import training_step
from ..optim import Adam
from ..nn import functional as F
from ..tensor import tensor, no_grad, manual_seed

__all__ = ["load_digits", "build_model", "train", "evaluate", "MODELS"]


def load_digits(test_fraction=0.2, seed=0):
    """(x_train, y_train, x_test, y_test): float32 images in [0, 1] shaped [N, 1, 8, 8],
    int64 labels; a stratified, seeded held-out split."""
    from sklearn.datasets import load_digits as sk_load
    d = sk_load()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        test[rng.choice(idx, int(round(len(idx) * test_fraction)), replace=False)] = True
    return x[~test], y[~test], x[test], y[test]


def build_model(name="mlp", device=None) -> nn.Module:
    if name == "mlp":
        return nn.Sequential(OrderedDict([
            ("flatten", nn.Flatten()), ("fc1", nn.Linear(64, 128, device=device)), ("relu1", nn.ReLU()),
            ("fc2", nn.Linear(128, 64, device=device)), ("relu2", nn.ReLU()), ("out", nn.Linear(64, 10, device=device))]))
    if name == "cnn":
        return nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(1, 16, 3, padding=1, device=device)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
            ("conv2", nn.Conv2d(16, 32, 3, padding=1, device=device)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
            ("flatten", nn.Flatten()), ("fc", nn.Linear(32 * 2 * 2, 64, device=device)), ("relu3", nn.ReLU()),
            ("out", nn.Linear(64, 10, device=device))]))
    raise ValueError(f"unknown model {name!r}; choose one of {MODELS}")


MODELS = ("mlp", "cnn")


def evaluate(model, x, y, device=None, batch=512) -> float:
    model.eval()
    correct = 0
    with no_grad():
        for i in range(0, len(x), batch):
            logits = model(tensor(x[i:i + batch], device=device))
            correct += int((logits.argmax(1).numpy() == y[i:i + batch]).sum())
    model.train()
    return correct / len(x)


def train(model_name="mlp", epochs=30, batch_size=64, lr=2e-3, seed=0, device=None, progress=True,
          on_step=None, on_epoch=None, compiled=True, checkpoints=None, resume=False):
    """Train on the digits; returns (model, history). ``on_step(step, epoch, metrics)``,
    ``on_epoch(model, record)``; ``checkpoints``: a CheckpointManager saved every epoch,
    and restored first when ``resume``."""

    manual_seed(seed)
    xtr, ytr, xte, yte = load_digits()
    model = build_model(model_name, device=device)
    opt = Adam(model.parameters(), lr=lr)

    run_step = training_step(model, F.cross_entropy, opt, compiled=compiled)
    history, gstep, first_epoch = [], 0, 0
    if resume and checkpoints is not None:
        state = checkpoints.restore(model, opt)
        if state:
            first_epoch, gstep = int(state["extra"]["epoch"]), int(state["step"])
            if progress:
                print(f"resumed from the checkpoint of step {gstep} (epoch {first_epoch})", flush=True)
    for epoch in range(first_epoch, epochs):
        # a per-epoch generator: the order of epoch k does not depend on how we got there
        perm = np.random.default_rng((seed, epoch)).permutation(len(xtr))
        n_full = len(perm) // batch_size       # full batches only: a compiled step has fixed shapes
        t0 = time.perf_counter()
        losses = []
        bar = tqdm(range(n_full), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False,
                   unit="step", mininterval=0.5)
        for b in bar:
            idx = perm[b * batch_size:(b + 1) * batch_size]
            loss = run_step(tensor(xtr[idx], device=device), tensor(ytr[idx], device=device))
            losses.append(loss.item())
            gstep += 1
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)   # redrawn at most every mininterval
            if on_step:
                on_step(gstep, epoch, {"loss": losses[-1]})
        dt = time.perf_counter() - t0
        acc = evaluate(model, xte, yte, device)
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "test_accuracy": acc,
               "epoch_s": dt, "samples_per_s": n_full * batch_size / dt}
        history.append(rec)
        if checkpoints is not None:
            checkpoints.save(gstep, model, opt, extra={"epoch": epoch + 1, "model": model_name})
        if on_epoch:
            on_epoch(model, rec)
        if progress:
            print(f"epoch {epoch + 1:3d}/{epochs}  loss {rec['loss']:.4f}  held-out accuracy {acc * 100:.2f}%  "
                  f"({rec['samples_per_s']:.0f} samples/s)", flush=True)
    return model, history
