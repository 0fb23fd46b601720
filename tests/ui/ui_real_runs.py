"""Record real runs with the real engine on the default OpenCL device (PoCL in CI):
the digits MLP through `engine train` itself, and a small model whose layer is named
like an XSS payload, trained for a few steps and recorded with RunRecorder directly."""
import os
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

import engine
from engine import nn
from engine.examples import digits
from engine.nn import functional as F
from engine.runs import RunRecorder
from ui.runs import RunStore
from ui_fixtures import XSS

REPO = Path(__file__).resolve().parents[2]


def train_digits_via_cli(root, model="mlp", epochs=2):
    """`engine train` as a user runs it; returns the run id it recorded."""
    cmd = [sys.executable, "-c", "import sys; from engine.cli import main; sys.exit(main(sys.argv[1:]))",
           "train", "--model", model, "--epochs", str(epochs), "--runs", str(root)]
    before = {r["id"] for r in RunStore(root).list_runs()}
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 0, f"engine train failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    [run_id] = {r["id"] for r in RunStore(root).list_runs()} - before
    return run_id


def train_hostile_names(root, steps=8, batch=32):
    """A model whose layer name is markup; recorded like `engine train` records."""
    engine.manual_seed(0)
    x, y, _, _ = digits.load_digits()
    model = nn.Sequential(OrderedDict([("flatten", nn.Flatten()), (XSS, nn.Linear(64, 32)),
                                       ("relu", nn.ReLU()), ("out", nn.Linear(32, 10))]))
    opt = engine.optim.Adam(model.parameters(), lr=3e-3)
    rec = RunRecorder.create(root, f"hostile {XSS}", {"example": "custom", "model": XSS})
    xb, yb = engine.tensor(x[:batch]), engine.tensor(y[:batch])
    rec.log_graph(engine.explain(lambda a, b: F.cross_entropy(model(a), b), xb, yb, backward=True).to_json())
    with engine.profile() as p:
        F.cross_entropy(model(xb), yb).backward()
    for prm in model.parameters():
        prm.grad = None
    rec.log_kernels(p.kernels)
    for s in range(steps):
        t0 = time.perf_counter()
        idx = np.arange(s * batch, (s + 1) * batch) % len(x)
        opt.zero_grad()
        loss = F.cross_entropy(model(engine.tensor(x[idx])), engine.tensor(y[idx]))
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        rec.log_metrics(s, 0, loss=loss.item(), step_time_s=dt, samples_per_s=batch / dt)
    path = rec.path / "w.tmp.safetensors"
    engine.save(model.state_dict(), path)
    rec.log_weights(path)
    path.unlink()
    rec.finish("finished")
    rec.close()
    return rec.run_id
