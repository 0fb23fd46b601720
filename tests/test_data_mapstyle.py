"""Map-style datasets and the DataLoader over __len__/__getitem__ (torch.utils.data's shape)."""
from collections import namedtuple

import numpy as np
import pytest

import engine
from engine.data import MapDataLoader as DataLoader, TensorDataset, Dataset, default_collate, random_split, Subset


class Squares(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return {"x": np.full(3, i, np.float64), "y": i * i, "name": f"s{i}"}


def test_batches_collate_and_drop_last():
    dl = DataLoader(Squares(), batch_size=4)
    batches = list(dl)
    assert len(dl) == 3 and len(batches) == 3
    b = batches[0]
    assert b["x"].shape == (4, 3) and b["x"].dtype == "float32" and b["y"].dtype == "int64"
    assert b["y"].numpy().tolist() == [0, 1, 4, 9] and b["name"] == ["s0", "s1", "s2", "s3"]
    assert batches[-1]["y"].shape == (2,)
    dl = DataLoader(Squares(), batch_size=4, drop_last=True)
    assert len(dl) == 2 and len(list(dl)) == 2


def test_shuffle_is_seeded_and_covers_every_row():
    ds = TensorDataset(np.arange(20, dtype=np.float32).reshape(10, 2), np.arange(10))
    a = [y for _, y in DataLoader(ds, batch_size=3, shuffle=True, generator=7)]
    b = [y for _, y in DataLoader(ds, batch_size=3, shuffle=True, generator=7)]
    order = np.concatenate([y.numpy() for y in a])
    assert sorted(order.tolist()) == list(range(10)) and order.tolist() != list(range(10))
    assert order.tolist() == np.concatenate([y.numpy() for y in b]).tolist()
    dl = DataLoader(ds, batch_size=5, shuffle=True, generator=1)
    e1 = np.concatenate([y.numpy() for _, y in dl])
    e2 = np.concatenate([y.numpy() for _, y in dl])
    assert e1.tolist() != e2.tolist()      # a new permutation each epoch


def test_tensor_dataset_of_engine_tensors_and_plain_objects():
    x = engine.tensor(np.arange(12, dtype=np.float32).reshape(6, 2))
    y = engine.tensor(np.array([0, 1, 0, 1, 1, 0]))
    ds = TensorDataset(x, y)
    assert len(ds) == 6 and ds[2][0].tolist() == [4.0, 5.0]
    xb, yb = next(iter(DataLoader(ds, batch_size=4)))
    assert xb.shape == (4, 2) and yb.numpy().tolist() == [0, 1, 0, 1]
    # any object with __len__ / __getitem__: a list of tuples
    pts = [(np.array([i, i + 1.0]), float(i) / 2) for i in range(5)]
    xb, yb = next(iter(DataLoader(pts, batch_size=5)))
    assert xb.shape == (5, 2) and yb.dtype == "float32"
    with pytest.raises(ValueError):
        TensorDataset(np.zeros(3), np.zeros(4))


def test_default_collate_structures():
    P = namedtuple("P", "a b")
    out = default_collate([P(np.ones(2), True), P(np.zeros(2), False)])
    assert isinstance(out, P) and out.a.shape == (2, 2) and out.b.dtype == "bool"
    out = default_collate([[1, 2.5], [3, 4.5]])
    assert out[0].numpy().tolist() == [1, 3] and out[1].dtype == "float32"
    out = default_collate([engine.ones(3), engine.zeros(3)])
    assert out.shape == (2, 3)


def test_samplers_and_random_split():
    ds = TensorDataset(np.arange(10))
    dl = DataLoader(ds, batch_size=2, sampler=[9, 8, 7])
    assert [b[0].numpy().tolist() for b in dl] == [[9, 8], [7]]
    dl = DataLoader(ds, batch_sampler=[[0, 5], [1]])
    assert [b[0].numpy().tolist() for b in dl] == [[0, 5], [1]] and len(dl) == 2
    a, b = random_split(ds, [0.7, 0.3], generator=0)
    assert len(a) == 7 and len(b) == 3 and isinstance(a, Subset)
    assert sorted([int(a[i][0]) for i in range(7)] + [int(b[i][0]) for i in range(3)]) == list(range(10))
    assert len(list(DataLoader(ds, batch_size=None))) == 10
