"""The PyTorch side of bench/mlp.py, runnable on its own (``python bench/mlp_torch.py``)
so it can use another interpreter that has torch installed."""
from __future__ import annotations

import argparse
import json
import os
import time


def torch_rate(steps=50, batch=128, repeat=3):
    import torch
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                                torch.nn.ReLU(), torch.nn.Linear(512, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 784), torch.randint(0, 10, (batch,))
    best = 0.0
    for _ in range(repeat):
        for i in range(steps + 3):
            if i == 3:
                t0 = time.perf_counter()
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        loss.item()
        best = max(best, steps * batch / (time.perf_counter() - t0))
    return best, torch.__version__


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=128)
    a = ap.parse_args()
    rate, version = torch_rate(a.steps, a.batch)
    print(json.dumps({"samples_per_s": rate, "torch": version}))
