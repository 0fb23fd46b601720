"""Issue 12, the files the engine reads and writes: checkpoints that do not fit the model,
checkpoint disks that are full or read-only, a Parquet footer that lies about its rows,
and step-program IR outside its schema (engine/validate.py)."""
import json
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from cluster_helpers import ROOT, child_env

engine = pytest.importorskip("engine")
from engine import validate  # noqa: E402
from engine.checkpoint import CheckpointError, CheckpointManager  # noqa: E402
from engine.data import ArrowDataset, DataError, write_parquet  # noqa: E402


def mlp(width=8):
    return engine.nn.Sequential(engine.nn.Linear(4, width), engine.nn.ReLU(), engine.nn.Linear(width, 2))


# --- checkpoints -------------------------------------------------------------------------------

def test_checkpoint_of_the_wrong_shape_falls_back_to_the_previous_good_one(tmp_path):
    good, other = mlp(8), mlp(16)
    opt = engine.optim.Adam(good.parameters(), lr=1e-2)
    ckpt = CheckpointManager(tmp_path)
    ckpt.save(1, good, opt)
    ckpt.save(2, other, engine.optim.Adam(other.parameters(), lr=1e-2))   # written by another architecture
    want = {k: v.numpy().copy() for k, v in good.state_dict().items()}
    fresh = mlp(8)
    before = {k: v.numpy().copy() for k, v in fresh.state_dict().items()}
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = ckpt.restore(fresh, engine.optim.Adam(fresh.parameters(), lr=1e-2))
    assert got["step"] == 1
    assert any("step 2" in str(x.message) and "shape" in str(x.message) for x in w), [str(x.message) for x in w]
    for k, v in fresh.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), want[k])
    assert any((before[k] != want[k]).any() for k in want)    # it really loaded something


SAVE = """
import resource, signal, sys
import engine
from engine.checkpoint import CheckpointManager, CheckpointError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # over RLIMIT_FSIZE: EFBIG, not death
ckpt = CheckpointManager(sys.argv[1])
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
for spec in sys.argv[2:]:                           # WIDTH or WIDTH:FILE_SIZE_LIMIT, one save each
    width, _, fsize = spec.partition(":")
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(fsize) if fsize else hard, hard))
    try:
        ckpt.save(int(width), engine.nn.Sequential(engine.nn.Linear(4, int(width))))
        print("ok", flush=True)
    except CheckpointError as e:
        print("CheckpointError:", e, flush=True)
"""


def saves_in_child(directory, *specs):
    """Checkpoint saves in a fresh process; one line of outcome per save."""
    r = subprocess.run([sys.executable, "-c", SAVE, str(directory), *map(str, specs)], cwd=ROOT, env=child_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    return r.stdout.splitlines()


def leftovers(directory):
    return sorted(f for f in os.listdir(directory) if ".tmp-" in f or f.endswith(".tmp"))


def test_a_full_disk_gives_a_clear_error_and_leaves_no_temp_file(tmp_path):
    small, big, after = saves_in_child(tmp_path, 4, f"4096:{16 << 10}", 5)   # 64 KB of weights, 16 KB allowed
    assert small == "ok" and after == "ok"
    assert big.startswith("CheckpointError: cannot write checkpoint file") and "limit" in big, big
    assert leftovers(tmp_path) == [] and [f for f in os.listdir(tmp_path) if "4096" in f] == []
    assert CheckpointManager(tmp_path).steps() == [4, 5]                   # the others are intact


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs needs root")
def test_a_full_then_read_only_tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount tmpfs here")
    try:
        small, full, after = saves_in_child(mnt, 4, 8192, 5)                # 128 KB: the disk fills up
        assert small == "ok" and after == "ok" and "disk is full" in full, full
        assert leftovers(mnt) == [] and CheckpointManager(mnt).steps() == [4, 5]
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        (ro,) = saves_in_child(mnt, 6)
        assert "read-only" in ro, ro
    finally:
        subprocess.run(["umount", str(mnt)])


# --- a Parquet footer that claims 2^31 rows --------------------------------------------------------

def _varint(n):
    out = b""
    while True:
        c, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([c])
        out += bytes([c | 0x80])


def test_parquet_footer_claiming_2_to_the_31_rows_is_a_data_error(tmp_path):
    path = tmp_path / "small.parquet"
    write_parquet(path, np.zeros((100, 4), np.float32), np.arange(100) % 3, row_group_size=100)
    blob = path.read_bytes()
    n = struct.unpack("<I", blob[-8:-4])[0]
    footer = blob[-8 - n:-8]
    old = b"\x16" + _varint(2 * 100)            # thrift compact: i64 field, zigzag varint of 100
    assert footer.count(old) >= 2               # FileMetaData.num_rows and RowGroup.num_rows
    forged = footer.replace(old, b"\x16" + _varint(2 * (1 << 31)))
    bad = tmp_path / "forged.parquet"
    bad.write_bytes(blob[:-8 - n] + forged + struct.pack("<I", len(forged)) + b"PAR1")
    r = subprocess.run([sys.executable, "-c", "import sys; from engine.data import ArrowDataset, DataLoader\n"
                        "try:\n    DataLoader(ArrowDataset(sys.argv[1]), 32, as_numpy=True)\n"
                        "except Exception as e:\n    print(type(e).__name__, e)", str(bad)],
                       cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120)
    assert r.stdout.startswith("DataError") and "2147483648 rows" in r.stdout, (r.stdout, r.stderr[-2000:])
    assert len(ArrowDataset(path)) == 100       # the honest file still reads


# --- IR outside its schema ---------------------------------------------------------------------------

def doc(nodes, outputs=None):
    return {"format": "many-as-one/step", "v": 1, "param_names": [], "param_shapes": [],
            "outputs": outputs or [len(nodes) - 1], "nodes": nodes}


X = {"op": "BUFFER", "srcs": [], "shape": [1, 1, 8, 8], "dtype": "float32", "input": "x"}


@pytest.mark.parametrize("node, why", [
    ({"op": "WINDOW", "srcs": [0], "shape": [1, 1, 14, 14, 3, 3], "dtype": "float32",
      "arg": [[3, 3], [1, 1], [-3, -3]]}, "ints >= 1"),
    ({"op": "WINDOW", "srcs": [0], "shape": [1, 1, 6, 6, 3, 3], "dtype": "float32",
      "arg": [[3, 3], [0, 1], [1, 1]]}, "ints >= 1"),
    ({"op": "WINDOW", "srcs": [0], "shape": [1, 1, 1, 1, 3, 3], "dtype": "float32",
      "arg": [[3, 3], [1, 1], [4, 4]]}, "does not fit"),
    ({"op": "SHRINK", "srcs": [0], "shape": [1, 1, 8, 8], "dtype": "float32",
      "arg": [[0, 1, 1], [0, 1, 1], [0, 9, 1], [0, 8, 1]]}, "inside"),
    ({"op": "PAD", "srcs": [0], "shape": [1, 1, 6, 8], "dtype": "float32",
      "arg": [[0, 0], [0, 0], [-1, -1], [0, 0]]}, "before >= 0"),
    ({"op": "SUM", "srcs": [0], "shape": [1, 1, 1, 8], "dtype": "float32", "arg": [-2]}, "distinct dims"),
    ({"op": "PERMUTE", "srcs": [0], "shape": [1, 1, 8, 8], "dtype": "float32", "arg": [0, 1, 3, -1]}, "permutation"),
    ({"op": "RAND", "srcs": [], "shape": [4], "dtype": "float32", "arg": [-1, 0]}, "seed"),
    ({"op": "CONST", "srcs": [], "shape": [4], "dtype": "float32", "arg": float("nan")}, "finite"),
    ({"op": "CAST", "srcs": [0], "shape": [1, 1, 8, 8], "dtype": "float32", "arg": "object"}, "unknown dtype"),
    ({"op": "EXP", "srcs": [0, 0], "shape": [1, 1, 8, 8], "dtype": "float32"}, "source"),
    ({"op": "EXP", "srcs": [0], "shape": [1, 1, 8, -8], "dtype": "float32"}, "shape"),
    ({"op": "EXP", "srcs": [0], "shape": [1, 1, 8, 8], "dtype": "float32", "arg": "__import__"}, "takes no arg"),
    ({"op": "BUFFER", "srcs": [], "shape": [4], "dtype": "float32", "input": "param:7"}, "existing parameter"),
])
def test_ir_outside_its_schema_is_refused(node, why):
    with pytest.raises(validate.ProgramInvalid, match=why):
        validate.check_program(doc([X, node]))
    with pytest.raises(ValueError, match=why):
        engine.StepProgram.from_json(doc([X, node]))


def test_ir_budgets_bound_allocation_and_work():
    big = {"op": "EXPAND", "srcs": [1], "shape": [1 << 14, 1 << 15], "dtype": "float32", "arg": [1 << 14, 1 << 15]}
    nodes = [{"op": "BUFFER", "srcs": [], "shape": [1], "dtype": "float32", "input": "x"},
             {"op": "RESHAPE", "srcs": [0], "shape": [1, 1], "dtype": "float32", "arg": [1, 1]}, big,
             {"op": "EXP", "srcs": [2], "shape": big["shape"], "dtype": "float32"}]
    with pytest.raises(validate.ProgramInvalid, match="budget of 1073741824 bytes"):
        validate.check_program(doc(nodes), max_bytes=1 << 30)
    with pytest.raises(validate.ProgramInvalid, match="operations"):
        validate.check_program(doc(nodes), max_bytes=1 << 40, max_flops=1e8)


def test_traced_programs_pass_validation():
    from engine.examples import digits
    xtr, ytr, _, _ = digits.load_digits()
    for name in ("mlp", "cnn"):
        d = json.loads(json.dumps(engine.trace_training_step(digits.build_model(name), engine.nn.functional.cross_entropy,
                                                             xtr[:8], ytr[:8]).to_json()))
        assert validate.check_program(d)["bytes"] < 64 << 20
