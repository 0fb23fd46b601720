"""`engine data convert|digits|info` (engine.data.cli.main) writes files the loader reads."""
import numpy as np
import pytest

from engine.data import ArrowDataset, DataLoader
from engine.data.cli import main


def test_digits_writes_all_samples_with_image_shape(tmp_path, capsys):
    out = tmp_path / "digits.parquet"
    assert main(["digits", str(out), "--row-group-size", "500"]) == 0
    assert "wrote 1797 rows" in capsys.readouterr().out
    ds = ArrowDataset(out)
    assert len(ds) == 1797 and ds.feature_shape == (1, 8, 8) and len(ds.parts) == 4
    x, y = next(iter(DataLoader(ds, 1797, shuffle=False, as_numpy=True)))
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() == 1.0
    assert sorted(set(y.tolist())) == list(range(10))
    assert main(["info", str(out)]) == 0
    assert "1797 rows in 4 parts" in capsys.readouterr().out


@pytest.mark.parametrize("tensor", [[], ["--tensor"]])
def test_npz_converts_with_shape_and_labels(tmp_path, tensor):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 2, 3))
    y = rng.integers(0, 4, 50)
    np.savez(tmp_path / "a.npz", features=x, labels=y)
    out = tmp_path / "a.parquet"
    assert main(["convert", str(tmp_path / "a.npz"), str(out), "--x-key", "features",
                 "--y-key", "labels", "--row-group-size", "16"] + tensor) == 0
    ds = ArrowDataset(out)
    assert ds.feature_shape == (2, 3) and len(ds.parts) == 4
    xs, ys = next(iter(DataLoader(ds, 50, shuffle=False, as_numpy=True)))
    np.testing.assert_allclose(xs, x.astype(np.float32))
    np.testing.assert_array_equal(ys, y)


def test_csv_converts_label_column_and_reports_bad_cells(tmp_path, capsys):
    (tmp_path / "a.csv").write_text("f1,f2,cls\n1,2.5,0\n3,4.5,1\n5,6.5,1\n")
    out = tmp_path / "a.parquet"
    assert main(["convert", str(tmp_path / "a.csv"), str(out), "--label", "cls"]) == 0
    x, y = ArrowDataset(out).read_part(0)
    np.testing.assert_array_equal(x, [[1, 2.5], [3, 4.5], [5, 6.5]])
    np.testing.assert_array_equal(y, [0, 1, 1])
    (tmp_path / "b.csv").write_text("f1,y\n1,0\n,1\n")
    assert main(["convert", str(tmp_path / "b.csv"), str(tmp_path / "b.parquet")]) == 1
    assert "column 'f1' has empty cells" in capsys.readouterr().err
    assert not (tmp_path / "b.parquet").exists()
    assert not list(tmp_path.glob("b.parquet.tmp*"))      # nothing half-written left behind


def test_missing_npz_key_is_a_clear_error(tmp_path, capsys):
    np.savez(tmp_path / "a.npz", x=np.zeros((3, 2)))
    assert main(["convert", str(tmp_path / "a.npz"), str(tmp_path / "o.parquet")]) == 1
    assert "no array 'y' (arrays: x); pass --x-key / --y-key" in capsys.readouterr().err


def test_arrow_input_is_rewritten_in_row_groups(tmp_path):
    main(["digits", str(tmp_path / "d.parquet"), "--tensor"])
    assert main(["convert", str(tmp_path / "d.parquet"), str(tmp_path / "e.parquet"),
                 "--row-group-size", "100", "--compression", "none"]) == 0
    ds = ArrowDataset(tmp_path / "e.parquet")
    assert len(ds) == 1797 and len(ds.parts) == 18 and ds.feature_shape == (1, 8, 8)
