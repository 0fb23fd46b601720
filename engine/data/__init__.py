"""Arrow / Parquet data: datasets read a part at a time, a streaming loader, converters,
and the `engine data` command (engine/data/cli.py, not imported here: it needs scikit-learn).

pyarrow is imported only inside this package (house style: one module per heavy dependency).
"""
from .dataset import ArrowDataset, DataError, Part, share_counts
from .loader import DataLoader, plan_windows, upload
from .convert import convert, describe, write_parquet
from .mapstyle import Dataset, TensorDataset, Subset, ConcatDataset, random_split, default_collate, DataLoader as MapDataLoader  # noqa: F401

__all__ = ["ArrowDataset", "DataError", "DataLoader", "Part", "convert", "describe",
           "plan_windows", "share_counts", "upload", "write_parquet"]
