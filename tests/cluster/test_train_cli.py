"""`engine train --nodes A,B`: the bundled example trained data-parallel on running
engine-nodes from the command line, recorded for the UI like a local run."""
import importlib.metadata
import re
import subprocess
import sys

import pytest

from cluster_helpers import ROOT, SECRET, child_env, start_nodes

pytest.importorskip("engine.examples.digits", reason="the engine and its example are required")
try:     # `engine train --nodes` is the cluster package's entry point into the engine's CLI
    importlib.metadata.distribution("many-as-one")
except importlib.metadata.PackageNotFoundError:
    pytest.skip("the project is not installed here (entry points come from `pip install -e .`; ./dev does it)",
                allow_module_level=True)
from ui.runs import RunStore  # noqa: E402

TRAIN = [sys.executable, "-c", "import sys; from engine.cli import main; sys.exit(main(sys.argv[1:]))", "train"]


def test_engine_train_on_two_nodes_reaches_accuracy_and_records_the_run(procs, tmp_path):
    """With bfloat16 gradient transport (--transport bf16): it still reaches the accuracy."""
    nodes = start_nodes(procs, 2)
    addrs = ",".join(n["control"] for n in nodes)
    out = subprocess.run([*TRAIN, "--nodes", addrs, "--model", "mlp", "--epochs", "3", "--runs", str(tmp_path),
                          "--transport", "bf16"],
                         cwd=ROOT, env=child_env(ENGINE_NODE_SECRET=SECRET), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    per_epoch = [float(a) for a in re.findall(r"epoch \d/3: .*held-out accuracy ([\d.]+)%", out.stderr + out.stdout)]
    assert len(per_epoch) == 3, out.stderr[-3000:]
    final = float(re.search(r"mlp: held-out accuracy ([\d.]+)% after 3 epochs on 2 node", out.stdout).group(1))
    assert final == per_epoch[-1] and final > 80, (per_epoch, final)
    [run] = RunStore(tmp_path).list_runs()
    assert run["status"] == "finished" and run["config"]["nodes"] == addrs.split(",")
    assert run["config"]["transport"] == "bfloat16"
    assert run["has_graph"] and run["has_kernels"] and run["has_weights"]   # the UI's graph, kernel and layer pages
    rows = RunStore(tmp_path).metrics(run["id"])
    assert len([r for r in rows if "loss" in r]) == 3 * (1437 // 64)
    assert [round(r["accuracy"] * 100, 2) for r in rows if "accuracy" in r] == per_epoch


def test_engine_train_on_nodes_needs_the_secret(procs, tmp_path):
    env = child_env()
    env.pop("ENGINE_NODE_SECRET", None)
    out = subprocess.run([*TRAIN, "--nodes", "tcp://127.0.0.1:9", "--runs", str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "ENGINE_NODE_SECRET" in out.stderr
