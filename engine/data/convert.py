"""Writing datasets the loader reads: numpy arrays, .npz and CSV files -> Parquet.

The layout: features in one column "x" (a fixed-size list of float32, with the sample shape
recorded in the field metadata, or an arrow.fixed_shape_tensor with tensor=True) and the
label in "y" (int64 for classes, float32 otherwise), in row groups of `row_group_size` rows
so the loader can stream and shuffle them.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..files import atomic_write
from .dataset import FEATURE_SHAPE_KEY, DataError, ArrowDataset

__all__ = ["write_parquet", "convert", "describe", "DEFAULT_ROW_GROUP_SIZE"]

DEFAULT_ROW_GROUP_SIZE = 8192


def _label_array(y: np.ndarray, where: str) -> pa.Array:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be one value per row, got shape {y.shape}")
    if np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_):
        return pa.array(y.astype(np.int64))
    if np.issubdtype(y.dtype, np.floating):
        return pa.array(y.astype(np.float32))
    raise DataError(f"{where}: labels have dtype {y.dtype}; expected integers or floats")


def _table(x: np.ndarray, y: np.ndarray, tensor: bool, where: str) -> pa.Table:
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.bool_)):
        raise DataError(f"{where}: features have dtype {x.dtype}; expected numbers")
    if x.ndim < 1 or len(x) != len(y):
        raise DataError(f"{where}: {len(x)} feature rows but {len(y)} labels")
    x = np.ascontiguousarray(x.reshape(len(x), -1) if x.ndim == 1 else x, dtype=np.float32)
    shape = x.shape[1:] if x.ndim > 1 else (1,)
    if tensor:
        storage = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), int(np.prod(shape)))
        xa = pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(pa.float32(), list(shape)), storage)
        field = pa.field("x", xa.type, nullable=False)
    else:
        width = int(np.prod(shape))
        # Non-nullable elements: Parquet then stores no definition levels per value, which
        # about doubles decode speed.
        list_type = pa.list_(pa.field("element", pa.float32(), nullable=False), width)
        xa = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), type=list_type)
        field = pa.field("x", xa.type, nullable=False,
                         metadata={FEATURE_SHAPE_KEY: json.dumps(list(shape)).encode()})
    ya = _label_array(y, where)
    schema = pa.schema([field, pa.field("y", ya.type, nullable=False)])
    return pa.Table.from_arrays([xa, ya], schema=schema)


def _write_tables(out: str, tables, row_group_size: int, compression) -> int:
    """Stream tables into one Parquet file that appears complete or not at all."""
    os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
    rows = 0

    def write(tmp):
        nonlocal rows
        writer = None
        try:
            for table in tables:
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression=compression,
                                              write_page_checksum=True)
                writer.write_table(table, row_group_size=row_group_size)
                rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise DataError(f"{out}: nothing to write (no rows)")

    atomic_write(out, writer=write)
    return rows


def write_parquet(path, x, y, row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
                  tensor: bool = False, compression: str | None = "snappy") -> int:
    """Write features x (n, ...) and labels y (n,) to a Parquet file; returns rows written.
    The file appears complete or not at all (written aside, then renamed). Page checksums
    let the reader detect flipped bytes."""
    path = os.fspath(path)
    return _write_tables(path, [_table(x, y, tensor, path)], row_group_size, compression)


def _csv_tables(src: str, label: str | None, tensor: bool):
    try:
        reader = pacsv.open_csv(src)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{src}: cannot read as CSV ({e})") from e
    names = reader.schema.names
    label = label or ("y" if "y" in names else names[-1])
    if label not in names:
        raise DataError(f"{src}: no column '{label}' (columns: {', '.join(names)}); pass --label")
    feats = [n for n in names if n != label]
    for n in feats + [label]:
        t = reader.schema.field(n).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
            raise DataError(f"{src}: column '{n}' has type {t}; every column must be numeric")
    line = 2
    try:
        for batch in reader:
            for n in names:
                if batch.column(n).null_count:
                    raise DataError(f"{src}: column '{n}' has empty cells in lines {line}..{line + batch.num_rows - 1}")
            x = np.stack([batch.column(n).to_numpy(zero_copy_only=False) for n in feats], axis=1)
            yield _table(x, batch.column(label).to_numpy(zero_copy_only=False), tensor, src)
            line += batch.num_rows
    except pa.ArrowException as e:
        raise DataError(f"{src}: cannot parse CSV near line {line} ({e})") from e


def convert(src, out, label: str | None = None, x_key: str = "x", y_key: str = "y",
            row_group_size: int = DEFAULT_ROW_GROUP_SIZE, tensor: bool = False,
            compression: str | None = "snappy") -> int:
    """Convert a .npz (arrays `x_key`, `y_key`), a CSV (label column `label`, default "y" or
    the last column; the other columns are features) or any file the loader reads
    (columns x, y) to the loader's Parquet layout. Returns rows written."""
    src, out = os.fspath(src), os.fspath(out)
    low = src.lower()
    if low.endswith(".npz"):
        try:
            arrays = np.load(src, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"{src}: cannot read as .npz ({e})") from e
        missing = [k for k in (x_key, y_key) if k not in arrays.files]
        if missing:
            raise DataError(f"{src}: no array {missing[0]!r} (arrays: {', '.join(arrays.files)}); "
                            "pass --x-key / --y-key")
        return write_parquet(out, arrays[x_key], arrays[y_key], row_group_size, tensor, compression)
    if low.endswith((".csv", ".csv.gz", ".tsv")):
        return _write_tables(out, _csv_tables(src, label, tensor), row_group_size, compression)
    ds = ArrowDataset(src, label=label or "y")
    parts = (_table(*ds.read_part(i), tensor, out) for i in range(len(ds.parts)))
    return _write_tables(out, parts, row_group_size, compression)


def describe(path) -> str:
    """A few lines about a data file: schema, rows, parts."""
    path = os.fspath(path)
    ds = ArrowDataset(path)
    lines = [repr(ds)]
    for s in ds._sources:
        lines.append(f"{s.name}: {s.kind}, {sum(s.part_rows)} rows in {len(s.part_rows)} parts")
        lines.extend(f"  {f.name}: {f.type}" for f in s.schema)
    return "\n".join(lines)
