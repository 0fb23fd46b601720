"""The three PyTorch ports in examples/ run tiny and match the same scripts run with
PyTorch (only the marked import block swapped) from the same initial weights."""
import re
import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

TORCH_IMPORTS = {
    "digits_cnn.py": """import torch
from torch import nn, optim
from torch.nn import functional as F
from torch.utils.data import TensorDataset, DataLoader
""",
    "char_gpt.py": """import torch
from torch import nn, optim
from torch.nn import functional as F
from torch.optim.lr_scheduler import LinearLR, CosineAnnealingLR, SequentialLR
from torch import tril
""",
    "parquet_regression.py": """import torch
from torch import nn, optim
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import TensorDataset, DataLoader
""",
}


def _load(name, backend):
    src = (EXAMPLES / name).read_text()
    if backend == "torch":
        src, n = re.subn(r"# >>> framework imports\n.*?# <<< framework imports\n",
                         TORCH_IMPORTS[name], src, flags=re.S)
        assert n == 1, "the example lost its import markers"
    mod = types.ModuleType(f"{name[:-3]}_{backend}")
    exec(compile(src, str(EXAMPLES / name), "exec"), mod.__dict__)
    return mod


def _state(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_digits_cnn_matches_torch():
    pytest.importorskip("sklearn")
    te, tt = _load("digits_cnn.py", "engine"), _load("digits_cnn.py", "torch")
    kw = dict(batch_size=32, n=80, width=4, dropout=0.0, shuffle=False)     # two full batches
    init = _state(tt.run(epochs=0, **kw)[0])
    _, lt, acc_t = tt.run(epochs=1, init_state=init, **kw)
    me, le, acc_e = te.run(epochs=1, init_state=init, **kw)
    assert len(le) == len(lt) == 2
    np.testing.assert_allclose(le, lt, rtol=2e-4)
    assert acc_e == pytest.approx(acc_t, abs=0.07)      # 16 held-out images
    assert me.bn1.num_batches_tracked.item() == 2


def test_char_gpt_matches_torch():
    te, tt = _load("char_gpt.py", "engine"), _load("char_gpt.py", "torch")
    kw = dict(d=16, heads=2, layers=1, block_size=8, batch_size=4, warmup=1, dropout=0.0)
    init = _state(tt.run(steps=0, **kw)[0])
    _, lt, rt, _, _ = tt.run(steps=3, init_state=init, **kw)
    model, le, re_, stoi, chars = te.run(steps=3, init_state=init, **kw)
    np.testing.assert_allclose(re_, rt, rtol=1e-9)          # warm-up + cosine schedule
    np.testing.assert_allclose(le, lt, rtol=2e-4)


def test_parquet_regression_matches_torch(tmp_path):
    te, tt = _load("parquet_regression.py", "engine"), _load("parquet_regression.py", "torch")
    path = te.write_synthetic(str(tmp_path / "d.parquet"), rows=120)
    kw = dict(batch_size=32, hidden=8, shuffle=False, lr=1e-2)
    init = _state(tt.run(path, epochs=0, **kw)[0])
    _, lt, mse_t = tt.run(path, epochs=3, init_state=init, **kw)
    _, le, mse_e = te.run(path, epochs=3, init_state=init, **kw)
    assert len(le) == len(lt) == 9
    np.testing.assert_allclose(le, lt, rtol=2e-4)
    assert mse_e == pytest.approx(mse_t, rel=2e-4)
