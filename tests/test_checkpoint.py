"""engine.checkpoint: round trip, keep-K, corruption detected and skipped, SIGKILL mid-save."""
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import engine
from engine.checkpoint import CheckpointError, CheckpointManager

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ArrayModel:
    """The model contract (state_dict / load_state_dict) over plain numpy arrays."""

    def __init__(self, value=0.0, n=1000):
        self.w = {"a.weight": np.full((n, 4), value, np.float32), "a.bias": np.full(7, value, np.float32)}

    def state_dict(self):
        return dict(self.w)

    def load_state_dict(self, state):
        self.w = {k: np.asarray(v) for k, v in state.items()}


class PositionLoader:
    def __init__(self):
        self.position = {"epoch": 0, "batch": 0}

    def state_dict(self):
        return dict(self.position)

    def load_state_dict(self, state):
        self.position = dict(state)


def test_round_trip_of_engine_model_optimizer_loader_and_rng(tmp_path):
    engine.manual_seed(1)
    model = engine.nn.Sequential(engine.nn.Linear(5, 3), engine.nn.ReLU(), engine.nn.Linear(3, 2))
    opt = engine.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = engine.tensor(np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32))
    y = engine.tensor(np.array([0, 1, 1, 0], np.int64))
    loss = engine.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    loader = PositionLoader()
    loader.position = {"epoch": 2, "batch": 5}
    ckpt = CheckpointManager(tmp_path / "ck")
    ckpt.save(7, model, opt, loader, extra={"loss": loss.item()})
    expected_rand = engine.rand(3).numpy()
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    momentum = opt.state_dict()["state"]

    engine.manual_seed(99)
    model2 = engine.nn.Sequential(engine.nn.Linear(5, 3), engine.nn.ReLU(), engine.nn.Linear(3, 2))
    opt2 = engine.optim.SGD(model2.parameters(), lr=0.5, momentum=0.1)
    loader2 = PositionLoader()
    info = CheckpointManager(tmp_path / "ck").restore(model2, opt2, loader2)
    assert info["step"] == 7 and info["extra"]["loss"] == pytest.approx(loss.item())
    assert loader2.position == {"epoch": 2, "batch": 5}
    for k, v in model2.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), weights[k])
    sd2 = opt2.state_dict()
    assert sd2["param_groups"][0]["lr"] == 0.1 and sd2["param_groups"][0]["momentum"] == 0.9
    for i, entry in momentum.items():
        for k, v in entry.items():
            np.testing.assert_array_equal(np.asarray(sd2["state"][i][k]), np.asarray(v))
    np.testing.assert_array_equal(engine.rand(3).numpy(), expected_rand)   # RNG state restored


def test_keeps_the_last_k_and_resaving_a_step_replaces_it(tmp_path):
    ckpt = CheckpointManager(tmp_path, keep=3)
    for step in range(1, 6):
        ckpt.save(step, ArrayModel(step), extra={"by_class": {10: 1.5, 2: np.float32(0.5)}, "t": (1, 2)})
    assert ckpt.steps() == [3, 4, 5]
    assert ckpt.load(5)[0]["extra"] == {"by_class": {"10": 1.5, "2": 0.5}, "t": [1, 2]}
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]) == 3
    ckpt.save(5, ArrayModel(55))
    model = ArrayModel()
    assert ckpt.restore(model)["step"] == 5 and model.w["a.bias"][0] == 55
    assert len(os.listdir(tmp_path)) == 6                      # no orphans, no temp files
    assert CheckpointManager(tmp_path / "empty").restore(ArrayModel()) is None


def _weights_file(ckpt, step):
    return os.path.join(ckpt.directory, next(f for f in os.listdir(ckpt.directory)
                                             if f.startswith(f"step-{step:08d}-")))


@pytest.mark.parametrize("damage, message", [
    ("flip", r"SHA-256 mismatch"),
    ("truncate", r"truncated or extended: \d+ bytes, manifest says \d+"),
    ("record", r"commit record unreadable"),
    ("state", r"state checksum mismatch"),
    ("delete", r"weights unreadable"),
])
def test_damaged_newest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, damage, message):
    ckpt = CheckpointManager(tmp_path, keep=3)
    for step in (1, 2, 3):
        ckpt.save(step, ArrayModel(step), extra={"step": step})
    weights, record = _weights_file(ckpt, 3), ckpt._record_path(3)
    if damage == "flip":
        data = bytearray(open(weights, "rb").read())
        data[len(data) // 2] ^= 0x01
        open(weights, "wb").write(bytes(data))
    elif damage == "truncate":
        os.truncate(weights, os.path.getsize(weights) // 2)
    elif damage == "record":
        os.truncate(record, 40)
    elif damage == "state":
        text = open(record).read().replace('"step": 3', '"step": 4', 1)
        open(record, "w").write(text)
    else:
        os.remove(weights)
    model = ArrayModel()
    with pytest.warns(RuntimeWarning, match=rf"skipping checkpoint of step 3: .*step-00000003.*{message}"):
        info = ckpt.restore(model)
    assert info["step"] == 2 and model.w["a.weight"][0, 0] == 2
    with pytest.raises(CheckpointError, match=message):
        ckpt.load(3)


def test_all_damaged_gives_none_with_a_warning_each(tmp_path):
    ckpt = CheckpointManager(tmp_path, keep=2)
    for step in (1, 2):
        ckpt.save(step, ArrayModel(step))
        os.truncate(_weights_file(ckpt, step), 10)
    with pytest.warns(RuntimeWarning) as caught:
        assert ckpt.restore(ArrayModel()) is None
    assert len(caught) == 2


SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    from engine.checkpoint import CheckpointManager

    class ArrayModel:
        def __init__(self): self.w = {}
        def state_dict(self): return self.w
        def load_state_dict(self, state): self.w = dict(state)

    model = ArrayModel()
    ckpt = CheckpointManager(sys.argv[1], keep=2)
    info = ckpt.restore(model)
    step = info["step"] if info else 0
    print("start", step, flush=True)
    while True:
        step += 1
        model.w = {"w": np.full((1 << 20,), step, np.float32), "b": np.full(3, step, np.float32)}
        ckpt.save(step, model, extra={"step": step})
        print("saved", step, flush=True)
""")


def test_sigkill_during_saves_never_loses_the_last_good_checkpoint(tmp_path):
    rng = random.Random(0)
    directory = tmp_path / "ck"
    last_seen, interrupted = 0, 0
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(directory)], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
        start = int(proc.stdout.readline().split()[1])
        assert start >= last_seen                     # never goes back past a completed save
        assert proc.stdout.readline().startswith("saved")
        time.sleep(rng.uniform(0.0, 0.15))            # somewhere inside a later save
        proc.send_signal(signal.SIGKILL)
        out = proc.communicate()[0].split()
        last_seen = max([int(v) for v in out[1::2]] + [start + 1])
        files = os.listdir(directory)
        records = {f[:len("step-00000000")] for f in files if f.endswith(".json")}
        interrupted += any(".tmp-" in f or (f.endswith(".safetensors") and f[:13] not in records)
                           for f in files)
    assert interrupted >= 1                           # some kills did land mid-save
    model = type("M", (), {"load_state_dict": lambda self, s: setattr(self, "w", s)})()
    info = CheckpointManager(directory, keep=2).restore(model)
    assert info["step"] >= last_seen
    assert (model.w["w"] == info["step"]).all() and model.w["w"].shape == (1 << 20,)
