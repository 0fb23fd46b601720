"""Kill a training process (SIGKILL) after a checkpoint, resume it, and get the same losses
as a run that was never interrupted: model, optimizer, RNG and loader position all restored."""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np

from engine.data.cli import main as data_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAINER = textwrap.dedent("""
    import sys, time
    import engine
    from engine.checkpoint import CheckpointManager
    from engine.data import ArrowDataset, DataLoader
    from engine.examples.digits import build_model

    data, directory, total, hang_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    engine.manual_seed(0)
    model = build_model("mlp")
    opt = engine.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = DataLoader(ArrowDataset(data), 64, seed=3, memory_budget=1 << 20)
    ckpt = CheckpointManager(directory, keep=2)
    info = ckpt.restore(model, opt, loader)
    step = info["step"] if info else 0
    print("start", step, flush=True)
    while step < total:
        for x, y in loader:
            opt.zero_grad()
            loss = engine.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            step += 1
            ckpt.save(step, model, opt, loader)
            print("loss", step, repr(loss.item()), flush=True)
            if step == hang_at:
                time.sleep(600)          # killed here, with the prefetch thread mid-epoch
            if step == total:
                break
""")


def _losses(lines):
    return {int(p[1]): float(p[2]) for p in (l.split() for l in lines) if p and p[0] == "loss"}


def _train(data, directory, total, hang_at=0):
    return subprocess.Popen([sys.executable, "-c", TRAINER, str(data), str(directory), str(total), str(hang_at)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)


def test_sigkill_then_resume_matches_uninterrupted_training(tmp_path):
    data = tmp_path / "digits.parquet"
    assert data_main(["digits", str(data), "--row-group-size", "300"]) == 0
    n, m = 40, 25            # 28 full batches + 1 short one per epoch: resume mid-epoch 1, cross into epoch 2
    reference = _train(data, tmp_path / "ref", n + m)
    ref = _losses(reference.communicate(timeout=240)[0].splitlines())
    assert reference.returncode == 0 and sorted(ref) == list(range(1, n + m + 1))

    victim = _train(data, tmp_path / "run", n + m, hang_at=n)
    lines = []
    for line in victim.stdout:
        lines.append(line)
        if line.startswith(f"loss {n} "):
            break
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    first = _losses(lines)
    assert [first[s] for s in range(1, n + 1)] == [ref[s] for s in range(1, n + 1)]

    resumed = _train(data, tmp_path / "run", n + m)
    out = resumed.communicate(timeout=240)[0].splitlines()
    assert resumed.returncode == 0 and out[0] == f"start {n}"
    after = _losses(out)
    assert sorted(after) == list(range(n + 1, n + m + 1))
    diff = np.abs(np.array([after[s] for s in after]) - np.array([ref[s] for s in after]))
    assert diff.max() <= 1e-6, diff
    print("max |loss difference| after resume:", diff.max())
