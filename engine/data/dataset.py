"""Arrow datasets: a table read one part (Parquet row group / Arrow record batch) at a time.

`ArrowDataset` opens Parquet, Arrow IPC (file or stream) and Feather v2 files, a directory
of them, or an in-memory `pyarrow.Table`. Opening reads only footers and schemas; a part is
decoded when the loader asks for it, so a dataset may be far larger than memory.

Every failure is a `DataError` that names the file, the part (row group / record batch)
and the column, and says what to do next.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

__all__ = ["ArrowDataset", "DataError", "Part", "share_counts", "FEATURE_SHAPE_KEY"]

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
IPC_SUFFIXES = (".arrow", ".feather", ".ipc", ".arrows")
# Field metadata key under which writers record a sample's shape for a flat list column.
FEATURE_SHAPE_KEY = b"engine.feature_shape"
# Parquet row groups are decoded in record batches of about this many bytes.
CHUNK_BYTES = 1 << 20


class DataError(ValueError):
    """A dataset cannot be read as asked: the message names file, part and column."""


@dataclass(frozen=True)
class Part:
    """Rows [start, stop) of part `index` (row group or record batch) of source `source`."""
    source: int
    index: int
    start: int
    stop: int

    @property
    def num_rows(self) -> int:
        return self.stop - self.start


def share_counts(n: int, shares) -> list[int]:
    """Split n rows by `shares` (largest remainder). When n >= len(shares) every share
    gets at least one row, so no rank is handed an empty batch."""
    w = np.asarray(shares, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"shares must be a non-empty list of non-negative weights, got {shares!r}")
    w = w / w.sum()
    ideal = n * w
    counts = np.floor(ideal).astype(np.int64)
    order = sorted(range(len(w)), key=lambda i: (-(ideal[i] - counts[i]), i))
    for i in order[: n - int(counts.sum())]:
        counts[i] += 1
    if n >= len(w):
        for i in np.flatnonzero(counts == 0):
            counts[int(np.argmax(counts))] -= 1
            counts[i] += 1
    return [int(c) for c in counts]


MAX_PART_ROWS = (1 << 31) - 1     # rows of one row group / record batch


def _check_footer_rows(name: str, total: int, part_rows: list) -> None:
    """Row counts come from the Parquet footer, before any data is read: a corrupt or
    forged one must give a DataError here, not a MemoryError when the loader sizes its
    buffers by them."""
    if sum(part_rows) != total:
        raise DataError(f"{name}: the footer says {total} rows but its row groups hold {sum(part_rows)}; "
                        "the file is corrupt - rewrite it (engine data convert)")
    for i, rows in enumerate(part_rows):
        if not 0 <= rows <= MAX_PART_ROWS:
            raise DataError(f"{name}: row group {i} claims {rows} rows (at most {MAX_PART_ROWS} are read per row "
                            "group); the footer is corrupt, or write smaller row groups (engine data convert "
                            "--row-group-size)")


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


class _Source:
    """One file (or the in-memory table): schema, part sizes and a reader for one part."""

    def __init__(self, origin, name: str):
        self.name = name
        self._lock = threading.Lock()
        self._parquet = None
        self._batches = None   # list of RecordBatch for IPC / tables (zero-copy, memory-mapped)
        if isinstance(origin, pa.Table):
            self.kind = "table"
            self._batches = origin.to_batches()
            self.schema = origin.schema
        elif str(origin).lower().endswith(PARQUET_SUFFIXES):
            self.kind = "parquet"
            try:
                # Page CRCs (written by write_parquet) catch flipped bytes inside a row group.
                self._parquet = pq.ParquetFile(origin, page_checksum_verification=True)
                self.schema = self._parquet.schema_arrow
            except (pa.ArrowException, OSError) as e:
                raise DataError(f"{name}: cannot open as Parquet ({e}); the file is truncated, "
                                "corrupt or not Parquet - rewrite it (engine data convert)") from e
        else:
            self.kind = "ipc"
            self._batches, self.schema = _read_ipc(origin, name)
        if self._parquet is not None:
            md = self._parquet.metadata
            self.part_rows = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
            _check_footer_rows(name, md.num_rows, self.part_rows)
        else:
            self.part_rows = [b.num_rows for b in self._batches]

    def where(self, index: int) -> str:
        unit = "row group" if self.kind == "parquet" else "record batch"
        return f"{self.name}: {unit} {index}"

    def chunks(self, index: int, columns: list[str], start: int, stop: int, chunk_rows: int):
        """Rows [start, stop) of part `index` as record batches of at most about chunk_rows
        rows (Parquet), or as one zero-copy slice (IPC, tables)."""
        if self._parquet is None:
            yield self._batches[index].select(columns).slice(start, stop - start)
            return
        offset = 0
        with self._lock:
            try:
                for batch in self._parquet.iter_batches(batch_size=chunk_rows, row_groups=[index],
                                                        columns=columns, use_threads=False):
                    a, b = max(start, offset), min(stop, offset + batch.num_rows)
                    if a < b:
                        yield batch.slice(a - offset, b - a)
                    offset += batch.num_rows
                    if offset >= stop:
                        return
            except (pa.ArrowException, OSError) as e:
                raise DataError(f"{self.where(index)}: cannot decode ({e}); the file is "
                                "truncated or corrupt - rewrite it") from e


def _read_ipc(path, name):
    try:
        source = pa.memory_map(str(path))
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{name}: cannot open ({e})") from e
    try:
        reader = ipc.open_file(source)
        return [reader.get_batch(i) for i in range(reader.num_record_batches)], reader.schema
    except pa.ArrowInvalid:
        source.seek(0)
    try:
        reader = ipc.open_stream(source)
        return list(reader), reader.schema
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{name}: not a readable Arrow IPC / Feather v2 file ({e}); it is "
                        "truncated, corrupt or another format (Parquet files must end in "
                        f"{'/'.join(PARQUET_SUFFIXES)})") from e


def _list_files(path: str) -> list[str]:
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if f.lower().endswith(PARQUET_SUFFIXES + IPC_SUFFIXES)
                       and not f.startswith((".", "_")))
        if not files:
            raise DataError(f"{path}: directory holds no Parquet ({', '.join(PARQUET_SUFFIXES)}) "
                            f"or Arrow ({', '.join(IPC_SUFFIXES)}) files")
        return files
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or directory")
    return [path]


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _feature_type_shape(field: pa.Field, where: str):
    """Per-sample shape known from the schema (None for a variable-size list), or DataError."""
    t = field.type
    if isinstance(t, pa.FixedShapeTensorType):
        if not _is_numeric(t.value_type):
            raise DataError(f"{where}: column '{field.name}' is a tensor of {t.value_type}; "
                            "expected a numeric value type")
        return tuple(t.shape)
    if _is_numeric(t):
        return (1,)
    shape = []
    while pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        shape.append(t.list_size if pa.types.is_fixed_size_list(t) else None)
        t = t.value_type
    if shape and _is_numeric(t):
        return None if None in shape else tuple(shape)
    raise DataError(f"{where}: column '{field.name}' has type {field.type}; a feature column must be "
                    "numeric, a (fixed-size) list of numbers or an arrow.fixed_shape_tensor - "
                    "cast it or choose other columns with features=[...]")


def _values(arr: pa.Array, where: str, name: str, first_row: int) -> np.ndarray:
    """Decode one feature column to an (n, *shape) numpy array, zero-copy where Arrow allows."""
    if arr.null_count:
        raise DataError(f"{where}: column '{name}' has {arr.null_count} null rows; fill or drop them")
    if isinstance(arr.type, pa.FixedShapeTensorType):
        # Through the storage list (to_numpy_ndarray rejects sliced arrays). Storage is in
        # the physical order given by `permutation`; samples come out in the logical `shape`.
        shape = list(arr.type.shape)
        perm = list(arr.type.permutation or range(len(shape)))
        flat = arr.storage.flatten().to_numpy(zero_copy_only=False)
        physical = flat.reshape([len(arr)] + [shape[p] for p in perm])
        return physical.transpose([0] + [1 + perm.index(i) for i in range(len(shape))])
    n, shape = len(arr), []
    while not _is_numeric(arr.type):
        if pa.types.is_fixed_size_list(arr.type):
            width = arr.type.list_size
        else:
            lengths = np.diff(arr.offsets.to_numpy())
            width = int(lengths[0]) if len(lengths) else 0
            bad = np.flatnonzero(lengths != width)
            if len(bad):
                r = int(bad[0])
                raise DataError(f"{where}: column '{name}' is ragged: row {first_row + r} has "
                                f"{lengths[r]} values, row {first_row} has {width}; every sample "
                                "needs the same length (pad the data or use a fixed_size_list)")
        arr = arr.flatten()
        if arr.null_count:
            raise DataError(f"{where}: column '{name}' has {arr.null_count} null values inside its lists")
        shape.append(width)
    flat = arr.to_numpy(zero_copy_only=False)
    return flat.reshape((n,) + tuple(shape)) if shape else flat.reshape(n, 1)


class ArrowDataset:
    """Rows of features and a label, read one part at a time.

    source:   a file path (Parquet / Arrow IPC / Feather), a directory of them, or a pyarrow.Table.
    features: a column name (numeric, fixed-size list, list of equal-length lists or
              arrow.fixed_shape_tensor), or a list of columns whose per-sample values are
              flattened and concatenated (e.g. numeric columns stacked into one vector).
              Default: "x" if the source has it, else every column but the label.
    label:    an integer (-> int64, class labels) or floating (-> float32) column.
    feature_shape: reshape each sample to this shape (default: the column's own shape, or
              the shape a writer recorded under field metadata `engine.feature_shape`).
    """

    def __init__(self, source, features=None, label: str = "y", feature_shape=None,
                 dtype=np.float32):
        if isinstance(source, pa.Table):
            self._sources = [_Source(source, "<table>")]
        else:
            self._sources = [_Source(f, f) for f in _list_files(os.fspath(source))]
        self.label = label
        self.dtype = np.dtype(dtype)
        first = self._sources[0].schema
        if features is None:
            features = "x" if "x" in first.names else [n for n in first.names if n != label]
        self.features = [features] if isinstance(features, str) else list(features)
        if not self.features:
            raise DataError(f"{self._sources[0].name}: no feature columns (columns: {first.names})")
        shapes = [self._check_schema(s) for s in self._sources]
        self._parts = [Part(i, j, 0, rows) for i, s in enumerate(self._sources)
                       for j, rows in enumerate(s.part_rows) if rows]
        if not self._parts:
            names = ", ".join(s.name for s in self._sources)
            raise DataError(f"{names}: dataset is empty (0 rows)")
        natural = shapes[0]
        self._natural_shape = self.feature_shape = None if natural is None else tuple(natural)
        if natural is None:   # variable-size lists: the first part decides, later parts must agree
            natural = self.read_part(0)[0].shape[1:]
        self._natural_shape = tuple(natural)
        self.feature_shape = tuple(feature_shape or self._recorded_shape(first) or natural)
        if int(np.prod(self.feature_shape)) != int(np.prod(natural)):
            raise DataError(f"{self._sources[0].name}: feature_shape {self.feature_shape} does not "
                            f"hold the {int(np.prod(natural))} values per sample of {self.features}")
        for s, shape in zip(self._sources, shapes):
            if shape is not None and int(np.prod(shape)) != int(np.prod(natural)):
                raise DataError(f"{s.name}: features {self.features} have {int(np.prod(shape))} "
                                f"values per sample, {self._sources[0].name} has {int(np.prod(natural))}")
        # A part is decoded whole (plus its shuffle order, 8 bytes a row): one claiming more
        # than this machine's memory is a corrupt footer or a file this loader cannot read.
        ram = _physical_memory()
        biggest = max(self._parts, key=lambda p: p.num_rows)
        need = biggest.num_rows * (self.row_bytes + 8)
        if ram and need > ram:
            raise DataError(f"{self._sources[biggest.source].where(biggest.index)}: claims {biggest.num_rows} rows, "
                            f"{need >> 20} MiB decoded, more than this machine's {ram >> 20} MiB of memory; the "
                            "footer is corrupt, or write smaller row groups (engine data convert --row-group-size)")

    # -- schema -------------------------------------------------------------------------
    def _check_schema(self, source: _Source):
        schema = source.schema
        for name in self.features + [self.label]:
            if name not in schema.names:
                raise DataError(f"{source.name}: no column '{name}' (columns: {', '.join(schema.names)}); "
                                "pass features=[...] / label=... to choose columns")
        lt = schema.field(self.label).type
        if not _is_numeric(lt):
            raise DataError(f"{source.name}: label column '{self.label}' has type {lt}; expected an "
                            "integer (class) or floating (regression) column")
        shapes = [_feature_type_shape(schema.field(n), source.name) for n in self.features]
        if len(shapes) == 1:
            return shapes[0]
        if None in shapes:
            return None
        return (sum(int(np.prod(s)) for s in shapes),)

    def _recorded_shape(self, schema: pa.Schema):
        if len(self.features) != 1:
            return None
        meta = schema.field(self.features[0]).metadata or {}
        return tuple(json.loads(meta[FEATURE_SHAPE_KEY])) if FEATURE_SHAPE_KEY in meta else None

    # -- size ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(p.num_rows for p in self._parts)

    @property
    def parts(self) -> list[Part]:
        return list(self._parts)

    @property
    def label_dtype(self) -> np.dtype:
        t = self._sources[0].schema.field(self.label).type
        return np.dtype(np.int64) if pa.types.is_integer(t) else np.dtype(np.float32)

    @property
    def row_bytes(self) -> int:
        """Bytes of one decoded sample (features + label)."""
        return int(np.prod(self.feature_shape)) * self.dtype.itemsize + self.label_dtype.itemsize

    def where(self, part: int) -> str:
        p = self._parts[part]
        return self._sources[p.source].where(p.index)

    def __repr__(self):
        return (f"ArrowDataset({len(self)} rows in {len(self._parts)} parts of "
                f"{len(self._sources)} source(s), features={self.features} "
                f"shape={self.feature_shape}, label='{self.label}')")

    # -- reading ------------------------------------------------------------------------
    def read_part(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode part i to (x: (n, *feature_shape) float32, y: (n,) int64 or float32).

        A Parquet row group is decoded in chunks of about CHUNK_BYTES copied into one array,
        so the transient Arrow memory is a few chunks, not a few row groups (Parquet's
        decoder grows its buffers by doubling). IPC and table parts are zero-copy views."""
        p = self._parts[i]
        source = self._sources[p.source]
        where = source.where(p.index)
        first_row = sum(source.part_rows[:p.index]) + p.start
        chunk_rows = max(64, CHUNK_BYTES // self.row_bytes) if self.feature_shape else p.num_rows
        x = y = None
        offset = 0
        for chunk in source.chunks(p.index, self.features + [self.label], p.start, p.stop, chunk_rows):
            xc, yc = self._decode(chunk, where, first_row + offset)
            if offset == 0 and chunk.num_rows == p.num_rows:
                return xc, yc                                # one chunk: keep Arrow's buffers
            if x is None:
                x = np.empty((p.num_rows,) + xc.shape[1:], xc.dtype)
                y = np.empty(p.num_rows, self.label_dtype)
            x[offset:offset + len(xc)] = xc
            y[offset:offset + len(yc)] = yc
            offset += len(xc)
        if offset != p.num_rows:
            raise DataError(f"{where}: expected {p.num_rows} rows, read {offset}; the file is truncated")
        return x, y

    def _decode(self, data, where: str, first_row: int):
        n = data.num_rows
        cols = []
        for name in self.features:
            try:
                cols.append(_values(data.column(name), where, name, first_row))
            except pa.ArrowException as e:
                raise DataError(f"{where}: column '{name}' cannot be decoded ({e})") from e
        x = cols[0] if len(cols) == 1 else np.concatenate([c.reshape(n, -1) for c in cols], axis=1)
        if self._natural_shape is None:
            return x, np.zeros(n, np.int64)   # probing the shape of variable-size lists
        if int(np.prod(x.shape[1:])) != int(np.prod(self._natural_shape)):
            raise DataError(f"{where}: features {self.features} have shape {x.shape[1:]} per sample, "
                            f"earlier parts have {self._natural_shape}")
        x = x.reshape((n,) + self.feature_shape).astype(self.dtype, copy=False)
        ycol = data.column(self.label)
        if ycol.null_count:
            raise DataError(f"{where}: label column '{self.label}' has {ycol.null_count} null rows")
        y = ycol.to_numpy(zero_copy_only=False).astype(self.label_dtype, copy=False)
        return x, y

    # -- sharding -----------------------------------------------------------------------
    def shard(self, rank: int, world: int, shares=None) -> "ArrowDataset":
        """The rows of `rank` out of `world` contiguous shards (sizes follow `shares`,
        default equal). Every row belongs to exactly one shard."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, {world})")
        shares = [1.0] * world if shares is None else list(shares)
        if len(shares) != world:
            raise ValueError(f"{len(shares)} shares for world {world}")
        counts = share_counts(len(self), shares)
        lo = sum(counts[:rank])
        hi = lo + counts[rank]
        parts, offset = [], 0
        for p in self._parts:
            a, b = max(lo, offset), min(hi, offset + p.num_rows)
            if a < b:
                parts.append(Part(p.source, p.index, p.start + a - offset, p.start + b - offset))
            offset += p.num_rows
        if not parts:
            raise DataError(f"shard {rank}/{world} of {self!r} is empty; use fewer shards")
        view = object.__new__(ArrowDataset)
        view.__dict__.update(self.__dict__)
        view._parts = parts
        return view
