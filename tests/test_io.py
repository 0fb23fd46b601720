"""engine.save / engine.load: what torch.save users write, without pickle."""
import numpy as np
import pytest

import engine
from engine import nn


def test_checkpoint_with_metadata_round_trips(tmp_path):
    engine.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = engine.optim.Adam(model.parameters(), lr=1e-2)
    (model(engine.randn(5, 3)) ** 2).mean().backward()
    opt.step()
    ckpt = {"epoch": 7, "best": 0.93, "note": "warm restart", "done": False, "nothing": None,
            "config": {"width": 4, "layers": [3, 4, 2], "lr": 1e-2},
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "mask": engine.tensor(np.tril(np.ones((3, 3), bool))), "ids": np.arange(4, dtype=np.int64)}
    engine.save(ckpt, tmp_path / "c.safetensors")
    back = engine.load(tmp_path / "c.safetensors")
    assert back["epoch"] == 7 and back["best"] == 0.93 and back["note"] == "warm restart"
    assert back["done"] is False and back["nothing"] is None
    assert back["config"] == {"width": 4, "layers": [3, 4, 2], "lr": 1e-2}
    assert list(back["model"]) == list(model.state_dict())
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(back["model"][k].numpy(), v.numpy())
    np.testing.assert_array_equal(back["mask"].numpy(), np.tril(np.ones((3, 3), bool)))
    assert back["ids"].dtype == "int64" and back["ids"].tolist() == [0, 1, 2, 3]
    opt2 = engine.optim.Adam(model.parameters(), lr=1e-2)
    opt2.load_state_dict(back["optimizer"])
    assert opt2.step_count == 1 and set(opt2.state[0]) == {"exp_avg", "exp_avg_sq"}
    model.load_state_dict(back["model"])


def test_flat_state_dict_and_refusals(tmp_path):
    sd = {"a.weight": engine.ones(2, 3), "b": engine.tensor(np.float32(2.5)),
          "x/y": engine.zeros(1), "x": {"y": engine.ones(1)}}      # names may hold the separator
    engine.save(sd, tmp_path / "f.safetensors")
    back = engine.load(tmp_path / "f.safetensors")
    assert list(back) == ["a.weight", "b", "x/y", "x"] and back["b"].shape == () and back["b"].item() == 2.5
    assert back["x/y"].item() == 0.0 and back["x"]["y"].item() == 1.0
    with pytest.raises(TypeError, match="nothing is pickled"):
        engine.save({"f": lambda: 1}, tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()
