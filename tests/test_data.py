"""engine.data: reading Arrow/Parquet, clear errors, streaming shuffled loader, sharding, resume.

Pure host-side tests (as_numpy=True): no OpenCL device needed. The device upload path is
tested in test_data_device.py.
"""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from engine.data import ArrowDataset, DataError, DataLoader, share_counts, write_parquet
from engine.data.convert import _table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make(tmp_path, n=1000, shape=(6,), rg=128, name="d.parquet", tensor=False, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + shape).astype(np.float32)
    y = np.arange(n, dtype=np.int64)      # label = row id, so coverage is easy to check
    path = tmp_path / name
    write_parquet(path, x, y, row_group_size=rg, tensor=tensor)
    return path, x, y


def collect(loader):
    xs, ys = zip(*list(loader))
    return np.concatenate(xs), np.concatenate(ys)


# -- reading ---------------------------------------------------------------------------

@pytest.mark.parametrize("tensor", [False, True])
def test_parquet_roundtrip_keeps_values_and_shape(tmp_path, tensor):
    path, x, y = make(tmp_path, n=301, shape=(1, 3, 5), rg=64, tensor=tensor)
    ds = ArrowDataset(path)
    assert len(ds) == 301 and len(ds.parts) == 5 and ds.feature_shape == (1, 3, 5)
    xs, ys = zip(*(ds.read_part(i) for i in range(len(ds.parts))))
    np.testing.assert_array_equal(np.concatenate(xs), x)
    np.testing.assert_array_equal(np.concatenate(ys), y)
    assert xs[0].dtype == np.float32 and ys[0].dtype == np.int64


def test_ipc_feather_directory_and_table_sources(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((50, 4)).astype(np.float32)
    b = rng.standard_normal((30, 4)).astype(np.float32)
    def table(x, y):
        return pa.table({"f": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 4),
                         "lbl": pa.array(y, pa.int32())})
    d = tmp_path / "dir"
    d.mkdir()
    with pa.ipc.new_file(d / "a.arrow", table(a, np.arange(50)).schema) as w:
        for batch in table(a, np.arange(50)).to_batches(max_chunksize=20):
            w.write_batch(batch)
    feather.write_feather(table(b, np.arange(50, 80)), d / "b.feather", chunksize=16)
    ds = ArrowDataset(d, features="f", label="lbl")
    assert len(ds) == 80 and [p.num_rows for p in ds.parts] == [20, 20, 10, 16, 14]
    x, y = collect(DataLoader(ds, 7, shuffle=False, as_numpy=True))
    np.testing.assert_array_equal(x, np.concatenate([a, b]))
    np.testing.assert_array_equal(y, np.arange(80))
    ds2 = ArrowDataset(table(a, np.arange(50)), features="f", label="lbl")
    np.testing.assert_array_equal(collect(DataLoader(ds2, 8, shuffle=False, as_numpy=True))[0], a)


def test_numeric_columns_are_stacked_and_float_labels_kept(tmp_path):
    t = pa.table({"a": pa.array([1, 2, 3], pa.int16()), "b": pa.array([.5, 1.5, 2.5]),
                  "target": pa.array([0.25, 0.5, 0.75], pa.float64())})
    ds = ArrowDataset(t, features=["a", "b"], label="target")
    x, y = ds.read_part(0)
    np.testing.assert_array_equal(x, np.array([[1, .5], [2, 1.5], [3, 2.5]], np.float32))
    assert x.dtype == np.float32 and y.dtype == np.float32 and ds.feature_shape == (2,)


def test_equal_length_list_column_is_accepted(tmp_path):
    t = pa.table({"x": pa.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], pa.list_(pa.float32())),
                  "y": [0, 1, 2]})
    pq.write_table(t, tmp_path / "l.parquet")
    x, _ = ArrowDataset(tmp_path / "l.parquet").read_part(0)
    np.testing.assert_array_equal(x, [[1, 2], [3, 4], [5, 6]])


# -- errors name file, part and column -------------------------------------------------

def test_missing_column_names_file_and_columns(tmp_path):
    path, _, _ = make(tmp_path, n=10)
    with pytest.raises(DataError, match=r"d\.parquet: no column 'label' \(columns: x, y\)"):
        ArrowDataset(path, label="label")


def test_wrong_dtype_names_column(tmp_path):
    t = pa.table({"x": pa.array(["a", "b"]), "y": [1, 2]})
    pq.write_table(t, tmp_path / "s.parquet")
    with pytest.raises(DataError, match=r"s\.parquet: column 'x' has type string"):
        ArrowDataset(tmp_path / "s.parquet")
    t = pa.table({"x": [1.0, 2.0], "y": pa.array(["cat", "dog"])})
    with pytest.raises(DataError, match=r"label column 'y' has type string"):
        ArrowDataset(t)


def test_ragged_list_names_row_group_and_row(tmp_path):
    rows = [[1.0, 2.0]] * 5 + [[1.0, 2.0], [3.0], [4.0, 5.0], [6.0, 7.0], [8.0, 9.0]]
    t = pa.table({"x": pa.array(rows, pa.list_(pa.float32())), "y": list(range(10))})
    pq.write_table(t, tmp_path / "r.parquet", row_group_size=5)
    ds = ArrowDataset(tmp_path / "r.parquet")
    ds.read_part(0)
    with pytest.raises(DataError, match=r"r\.parquet: row group 1: column 'x' is ragged: row 6 has 1 values"):
        ds.read_part(1)


def test_nulls_are_refused(tmp_path):
    t = pa.table({"x": pa.array([1.0, None, 3.0]), "y": [0, 1, 2]})
    with pytest.raises(DataError, match=r"column 'x' has 1 null rows"):
        ArrowDataset(t).read_part(0)


def test_truncated_parquet_is_reported(tmp_path):
    path, _, _ = make(tmp_path, n=100)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"d\.parquet: cannot open as Parquet .*truncated"):
        ArrowDataset(path)


def test_corrupt_row_group_is_reported_with_its_index(tmp_path):
    path, _, _ = make(tmp_path, n=400, rg=100)
    md = pq.ParquetFile(path).metadata
    offset = md.row_group(2).column(0).data_page_offset + 40   # inside row group 2's x page
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    ds = ArrowDataset(path)
    ds.read_part(1)
    with pytest.raises(DataError, match=r"d\.parquet: row group 2: cannot decode"):
        ds.read_part(2)


def test_corrupt_arrow_file_and_empty_inputs(tmp_path):
    (tmp_path / "bad.arrow").write_bytes(b"not arrow at all" * 10)
    with pytest.raises(DataError, match=r"bad\.arrow: not a readable Arrow IPC"):
        ArrowDataset(tmp_path / "bad.arrow")
    pq.write_table(pa.table({"x": pa.array([], pa.float32()), "y": pa.array([], pa.int64())}),
                   tmp_path / "empty.parquet")
    with pytest.raises(DataError, match=r"empty\.parquet: dataset is empty"):
        ArrowDataset(tmp_path / "empty.parquet")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match=r"nothing: directory holds no Parquet"):
        ArrowDataset(tmp_path / "nothing")
    with pytest.raises(DataError, match=r"no such file"):
        ArrowDataset(tmp_path / "missing.parquet")


# -- loader ----------------------------------------------------------------------------

def test_epoch_is_a_permutation_reproducible_per_seed_and_epoch(tmp_path):
    path, x, _ = make(tmp_path, n=1000, rg=128)
    ds = ArrowDataset(path)
    a = DataLoader(ds, 64, seed=5, window=300, as_numpy=True)
    b = DataLoader(ds, 64, seed=5, window=300, as_numpy=True, prefetch=0)
    e0a, e1a = collect(a), collect(a)
    e0b, e1b = collect(b), collect(b)
    for xs, ys in (e0a, e1a):
        assert sorted(ys) == list(range(1000))            # every row exactly once
        np.testing.assert_array_equal(xs, x[ys])           # features travel with their label
    np.testing.assert_array_equal(e0a[1], e0b[1])          # same seed+epoch -> same order
    np.testing.assert_array_equal(e1a[1], e1b[1])
    assert not np.array_equal(e0a[1], e1a[1])              # epochs differ
    assert not np.array_equal(e0a[1], collect(DataLoader(ds, 64, seed=6, window=300, as_numpy=True))[1])
    assert a.epoch == 2


def test_shuffle_mixes_parts_within_a_window(tmp_path):
    path, _, _ = make(tmp_path, n=1024, rg=128)
    _, y = next(iter(DataLoader(ArrowDataset(path), 256, seed=0, window=512, as_numpy=True)))
    assert len(set((y // 128).tolist())) >= 3              # rows from several row groups
    assert not np.array_equal(np.sort(y), y)


def test_last_batch_is_kept_or_dropped_explicitly(tmp_path):
    path, _, _ = make(tmp_path, n=1000, rg=128)
    ds = ArrowDataset(path)
    sizes = [len(y) for _, y in DataLoader(ds, 96, as_numpy=True)]
    assert sizes == [96] * 10 + [40]
    loader = DataLoader(ds, 96, drop_last=True, as_numpy=True)
    assert [len(y) for _, y in loader] == [96] * 10 and len(loader) == 10


def test_state_dict_resumes_mid_epoch_exactly(tmp_path):
    path, _, _ = make(tmp_path, n=1000, rg=100)
    ds = ArrowDataset(path)
    full = DataLoader(ds, 32, seed=3, window=250, as_numpy=True)
    reference = [y for _, y in full] + [y for _, y in full]   # epochs 0 and 1
    run = DataLoader(ds, 32, seed=3, window=250, as_numpy=True)
    seen = []
    for i, (_, y) in enumerate(run):
        seen.append(y)
        if i == 16:
            state = run.state_dict()
            break
    assert state["epoch"] == 0 and state["batch"] == 17
    resumed = DataLoader(ds, 32, seed=3, memory_budget=1 << 30, as_numpy=True)
    resumed.load_state_dict(state)                            # adopts the saved window
    seen += [y for _, y in resumed] + [y for _, y in resumed]
    assert len(seen) == len(reference)
    for a, b in zip(seen, reference):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="batch_size=32 but this loader has batch_size=64"):
        DataLoader(ds, 64, as_numpy=True).load_state_dict(state)


def test_state_after_last_batch_points_at_next_epoch(tmp_path):
    path, _, _ = make(tmp_path, n=100, rg=50)
    loader = DataLoader(ArrowDataset(path), 50, as_numpy=True)
    it = iter(loader)
    next(it), next(it)
    assert (loader.state_dict()["epoch"], loader.state_dict()["batch"]) == (1, 0)


def test_share_counts():
    assert share_counts(128, [0.7, 0.3]) == [90, 38]
    assert share_counts(10, [1, 1, 1]) == [4, 3, 3]
    assert share_counts(3, [0.98, 0.01, 0.01]) == [1, 1, 1]   # nobody empty when avoidable
    assert sum(share_counts(1001, [0.5, 0.2, 0.3])) == 1001


@pytest.mark.parametrize("shares", [None, [0.7, 0.3], [3, 1, 1]])
def test_weighted_shards_see_every_sample_once_per_epoch(tmp_path, shares):
    path, x, _ = make(tmp_path, n=1000, rg=128)
    base = DataLoader(ArrowDataset(path), 100, seed=9, window=400, as_numpy=True)
    world = 2 if shares is None else len(shares)
    ranks = [base.shard(r, world, shares) for r in range(world)]
    per_rank = [[y for _, y in loader] for loader in ranks]
    assert len({len(b) for b in per_rank}) == 1               # same number of steps everywhere
    everything = np.concatenate([np.concatenate(b) for b in per_rank])
    assert sorted(everything) == list(range(1000))
    global_batches = [y for _, y in base]
    for step, glob in enumerate(global_batches):              # each global batch = union of slices
        np.testing.assert_array_equal(np.concatenate([b[step] for b in per_rank]), glob)
    if shares == [0.7, 0.3]:
        assert [len(b[0]) for b in per_rank] == [70, 30]


def test_dataset_shard_partitions_rows(tmp_path):
    path, _, _ = make(tmp_path, n=1000, rg=128)
    ds = ArrowDataset(path)
    shards = [ds.shard(r, 3, [0.5, 0.3, 0.2]) for r in range(3)]
    assert [len(s) for s in shards] == [500, 300, 200]
    ys = [collect(DataLoader(s, 64, seed=1, as_numpy=True))[1] for s in shards]
    assert sorted(np.concatenate(ys)) == list(range(1000))


def test_producer_errors_surface_and_break_stops_the_thread(tmp_path):
    rows = [[1.0, 2.0]] * 105 + [[1.0]] + [[1.0, 2.0]] * 94
    t = pa.table({"x": pa.array(rows, pa.list_(pa.float32())), "y": list(range(200))})
    pq.write_table(t, tmp_path / "r.parquet", row_group_size=100)
    loader = DataLoader(ArrowDataset(tmp_path / "r.parquet"), 10, shuffle=False, as_numpy=True)
    with pytest.raises(DataError, match="row group 1: column 'x' is ragged: row 105 has 1 values"):
        list(loader)
    path, _, _ = make(tmp_path, n=1000, rg=100)
    before = threading.active_count()
    loader = DataLoader(ArrowDataset(path), 10, as_numpy=True, prefetch=2)
    for i, _ in enumerate(loader):
        if i == 3:
            break
    assert threading.active_count() == before
    assert loader.state_dict()["batch"] == 4


def test_unshuffled_single_part_batches_are_views_of_arrow_memory(tmp_path):
    path, _, _ = make(tmp_path, n=256, rg=256)
    x, _ = next(iter(DataLoader(ArrowDataset(path), 64, shuffle=False, prefetch=0, as_numpy=True)))
    assert not x.flags.owndata                                # no copy between Arrow and upload


# -- streaming: memory stays within the budget ------------------------------------------

STREAM_SCRIPT = textwrap.dedent("""
    import sys, threading, time, tracemalloc
    import pyarrow as pa
    from engine.data import ArrowDataset, DataLoader

    def rss_bytes():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("RssAnon:")) * 1024

    path, budget, window = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) or None
    ds = ArrowDataset(path)
    loader = DataLoader(ds, 256, seed=0, memory_budget=budget, window=window, as_numpy=True)
    ds.read_part(0)                     # one-time library initialisation, not data
    base_rss, peak_rss, stop = rss_bytes(), [0], threading.Event()
    def sample():
        while not stop.is_set():
            peak_rss[0] = max(peak_rss[0], rss_bytes())
            time.sleep(0.001)
    sampler = threading.Thread(target=sample)
    sampler.start()
    tracemalloc.start()                 # numpy buffers (batches, gathers)
    rows = sum(len(y) for _, y in loader)
    numpy_peak = tracemalloc.get_traced_memory()[1]
    stop.set(); sampler.join()
    arrow_peak = pa.default_memory_pool().max_memory()   # Arrow buffers, whole process
    print(rows, arrow_peak, numpy_peak, peak_rss[0] - base_rss)
""")


def _stream(path, budget, window=0):
    out = subprocess.run([sys.executable, "-c", STREAM_SCRIPT, str(path), str(budget), str(window)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return map(int, out.stdout.split())


def test_streaming_holds_memory_under_budget_for_a_file_5x_larger(tmp_path):
    budget = 24 << 20
    n, d = 40_000, 784                                        # 125 MB of float32 features
    path = tmp_path / "big.parquet"
    rng = np.random.default_rng(0)
    schema = _table(np.zeros((1, d)), np.zeros(1, np.int64), False, "").schema
    with pq.ParquetWriter(path, schema, compression=None) as w:
        for start in range(0, n, 1000):
            x = rng.random((1000, d), dtype=np.float32)
            w.write_table(_table(x, np.arange(start, start + 1000), False, ""), row_group_size=1000)
    size = path.stat().st_size
    assert size > 5 * budget
    rows, arrow_peak, numpy_peak, rss_growth = _stream(path, budget)
    assert rows == n
    # Live memory, counted by the allocators themselves, stays within the budget ...
    assert arrow_peak + numpy_peak < budget, (arrow_peak >> 20, numpy_peak >> 20)
    # ... and so does the process: RSS also counts what mimalloc/glibc keep cached after a
    # free (measured ~1.3x the budget here), never the file (5x the budget).
    assert rss_growth < 2 * budget, rss_growth >> 20
    # Control: a window as large as the file does show up in the same measurements.
    rows, arrow_peak, numpy_peak, rss_growth = _stream(path, budget, window=n)
    assert rows == n and arrow_peak + numpy_peak > 0.8 * size and rss_growth > size / 2


def test_permuted_tensor_extension_is_read_in_logical_shape(tmp_path):
    x = np.arange(4 * 3 * 2 * 5, dtype=np.float32).reshape(4, 3, 2, 5)
    physical = x.transpose(0, 3, 1, 2)                        # permutation [2, 0, 1]
    storage = pa.FixedSizeListArray.from_arrays(pa.array(physical.ravel()), 30)
    xa = pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(pa.float32(), [3, 2, 5], permutation=[2, 0, 1]),
                                        storage)
    pq.write_table(pa.table({"x": xa, "y": np.arange(4)}), tmp_path / "p.parquet")
    ds = ArrowDataset(tmp_path / "p.parquet")
    assert ds.feature_shape == (3, 2, 5)
    np.testing.assert_array_equal(ds.read_part(0)[0], x)


def test_position_survives_a_change_of_world(tmp_path):
    """A node drops out mid-epoch: the survivors load the saved position with the new world
    and shares, and the epoch still covers every row exactly once."""
    path, _, _ = make(tmp_path, n=1000, rg=128)
    base = DataLoader(ArrowDataset(path), 100, seed=2, window=400, as_numpy=True)
    three = [base.shard(r, 3, [0.5, 0.3, 0.2]) for r in range(3)]
    seen, iters = [], [iter(loader) for loader in three]
    for _ in range(4):                                        # four global steps with three nodes
        seen += [next(it)[1] for it in iters]
    state = three[0].state_dict()
    for it in iters:
        it.close()
    assert state["batch"] == 4
    two = [DataLoader(ArrowDataset(path), 100, seed=2, as_numpy=True, rank=r, world=2, shares=[0.6, 0.4])
           for r in range(2)]
    for loader in two:
        loader.load_state_dict(state)
        seen += [y for _, y in loader]
    assert sorted(np.concatenate(seen)) == list(range(1000))


def test_ipc_stream_files_and_a_bad_file_in_a_directory(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    t = pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 2), "y": np.arange(20)})
    with pa.ipc.new_stream(d / "a.arrows", t.schema) as w:
        for batch in t.to_batches(max_chunksize=8):
            w.write_batch(batch)
    ds = ArrowDataset(d)
    assert [p.num_rows for p in ds.parts] == [8, 8, 4]
    np.testing.assert_array_equal(collect(DataLoader(ds, 6, shuffle=False, as_numpy=True))[0], x)
    pq.write_table(pa.table({"x": [1.0], "label": [0]}), d / "b.parquet")
    with pytest.raises(DataError, match=r"b\.parquet: no column 'y' \(columns: x, label\)"):
        ArrowDataset(d)
