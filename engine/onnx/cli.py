"""``engine onnx ...``: run an ONNX model on the default OpenCL device.

    engine onnx run MODEL.onnx --input x.npy [--input name=y.npy] [--repeat 5] [--save out.npz]
    engine onnx ops                      # the supported operators
    engine onnx check MODEL.onnx         # load only: unsupported operators are listed

Register as a subcommand whose handler is ``main(argv)`` with argv after "onnx".
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _parser():
    p = argparse.ArgumentParser(prog="engine onnx", description="Run ONNX models on any OpenCL device.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a model on .npy inputs; print outputs and timings")
    r.add_argument("model", help="path to MODEL.onnx (external data files next to it are read)")
    r.add_argument("--input", "-i", action="append", default=[],
                   help="an input as a .npy file, in graph order, or NAME=FILE.npy (repeatable)")
    r.add_argument("--repeat", type=int, default=3, help="timed runs after the first (default: 3)")
    r.add_argument("--save", help="write the outputs to this .npz file")
    sub.add_parser("ops", help="list the supported ONNX operators")
    c = sub.add_parser("check", help="load a model and report whether every operator is supported")
    c.add_argument("model")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    from . import SUPPORTED_OPS, OnnxImportError, load
    if args.cmd == "ops":
        print(f"{len(SUPPORTED_OPS)} supported operators:")
        print(", ".join(SUPPORTED_OPS))
        return 0
    if args.cmd == "check":
        try:
            m = load(args.model)
        except OnnxImportError as e:
            print(e)
            return 1
        print(f"ok: inputs {m.input_names}, outputs {m.output_names}, {len(m.parameters())} parameter tensors")
        return 0
    t0 = time.perf_counter()
    try:
        m = load(args.model)
    except OnnxImportError as e:
        print(e, file=sys.stderr)
        return 1
    t_load = time.perf_counter() - t0
    m.eval()
    pos, named = [], {}
    for spec in args.input:
        if "=" in spec and not spec.endswith(".npy=") and spec.split("=", 1)[0] in m.input_names:
            k, f = spec.split("=", 1)
            named[k] = np.load(f)
        else:
            pos.append(np.load(spec))
    if len(pos) + len(named) != len(m.input_names):
        print(f"the model takes {len(m.input_names)} inputs {m.input_names}; got {len(pos) + len(named)}", file=sys.stderr)
        return 2
    import engine

    def run():
        out = m(*pos, **named)
        out = out if isinstance(out, tuple) else (out,)
        engine.realize_all(*out)
        return out

    t0 = time.perf_counter()
    with engine.no_grad():
        try:
            outs = run()
        except OnnxImportError as e:
            print(e, file=sys.stderr)
            return 1
        t_first = time.perf_counter() - t0
        times = []
        for _ in range(max(args.repeat, 0)):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
    arrays = {}
    for name, o in zip(m.output_names, outs):
        a = o.numpy()
        arrays[name] = a
        flat = a.reshape(-1)
        print(f"{name}: shape {a.shape} {a.dtype}  {np.array2string(flat[:8], precision=5)}{' ...' if flat.size > 8 else ''}")
    print(f"load {t_load * 1e3:.1f} ms, first run (with kernel builds) {t_first * 1e3:.1f} ms"
          + (f", then median {np.median(times) * 1e3:.2f} ms over {len(times)} runs" if times else ""))
    if args.save:
        np.savez(args.save, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main())
