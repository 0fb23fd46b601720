"""ENGINE_DEBUG levels and ENGINE_DUMP: what a user sees of the schedule, IR, source, launches."""
import json
import subprocess
import sys

import numpy as np

import engine

SCRIPT = ("import engine, numpy as np; x = engine.tensor(np.arange(12, dtype=np.float32).reshape(3, 4)); "
          "print((x.exp() * 2).sum(1).numpy())")


def _run(env_extra, tmp_path):
    import os
    env = dict(os.environ, **env_extra)
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stderr


def test_debug_levels_add_up(tmp_path):
    quiet = _run({"ENGINE_DEBUG": "0"}, tmp_path)
    assert "[engine]" not in quiet
    one = _run({"ENGINE_DEBUG": "1"}, tmp_path)
    assert "schedule: 1 kernel" in one and "fuses SUM MUL EXP" in one and "BUFFER" not in one
    two = _run({"ENGINE_DEBUG": "2"}, tmp_path)
    assert "= EXP(%0)" in two and "= SUM(%3) arg=(1,)" in two and "__kernel" not in two
    three = _run({"ENGINE_DEBUG": "3"}, tmp_path)
    assert "__kernel void mao_reduce" in three and "[engine] launch" not in three
    four = _run({"ENGINE_DEBUG": "4"}, tmp_path)
    assert "[engine] launch mao_reduce" in four and " ms" in four


def test_dump_writes_source_and_exact_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_DUMP", str(tmp_path))
    x = engine.tensor(np.linspace(0.5, 2.0, 10, dtype=np.float32))
    np.testing.assert_allclose((x * 3.0 + 1.0).numpy(), np.linspace(0.5, 2.0, 10) * 3 + 1, rtol=1e-6)
    (desc_path,) = [p for p in tmp_path.iterdir() if p.suffix == ".json"]
    desc = json.loads(desc_path.read_text())
    source = desc_path.with_suffix(".cl").read_text()
    assert desc["name"] in source and desc["template"] == "elementwise"
    assert desc["fused_ops"] and desc["global_size"] and isinstance(desc["params"], dict)
