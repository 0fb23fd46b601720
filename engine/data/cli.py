"""`engine data ...`: turn numpy / CSV / Arrow files into the Parquet layout the loader reads.

    engine data convert IN OUT [--label COL] [--x-key K --y-key K] [--row-group-size N] [--tensor]
    engine data digits OUT.parquet [--tensor] [--row-group-size N]
    engine data info PATH

The layout: features in column "x" (fixed-size list of float32 with the sample shape in
its field metadata, or arrow.fixed_shape_tensor with --tensor), label in "y".
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from sklearn.datasets import load_digits

from .convert import DEFAULT_ROW_GROUP_SIZE, convert, describe, write_parquet
from .dataset import DataError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="engine data", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def layout(q):
        q.add_argument("--row-group-size", type=int, default=DEFAULT_ROW_GROUP_SIZE,
                       help=f"rows per Parquet row group, the unit the loader streams (default {DEFAULT_ROW_GROUP_SIZE})")
        q.add_argument("--tensor", action="store_true",
                       help="store features as arrow.fixed_shape_tensor instead of a fixed-size list")
        q.add_argument("--compression", default="snappy", help="Parquet codec: snappy, zstd, none (default snappy)")

    c = sub.add_parser("convert", help="convert .npz / .csv / Arrow / Parquet to the loader's Parquet layout")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--label", help="CSV label column (default: 'y' if present, else the last column)")
    c.add_argument("--x-key", default="x", help=".npz array of features (default x)")
    c.add_argument("--y-key", default="y", help=".npz array of labels (default y)")
    layout(c)

    d = sub.add_parser("digits", help="write scikit-learn's bundled 8x8 digits (1797 rows) to Parquet")
    d.add_argument("output")
    layout(d)

    i = sub.add_parser("info", help="print schema, rows and row groups of a data file or directory")
    i.add_argument("path")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "info":
            print(describe(args.path))
            return 0
        compression = None if args.compression == "none" else args.compression
        if args.command == "digits":
            d = load_digits()
            x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]   # [N, 1, 8, 8] in [0, 1]
            rows = write_parquet(args.output, x, d.target.astype(np.int64), args.row_group_size,
                                 args.tensor, compression)
        else:
            rows = convert(args.input, args.output, label=args.label, x_key=args.x_key, y_key=args.y_key,
                           row_group_size=args.row_group_size, tensor=args.tensor, compression=compression)
    except DataError as e:
        print(f"engine data {args.command}: {e}", file=sys.stderr)
        return 1
    print(f"wrote {rows} rows to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
