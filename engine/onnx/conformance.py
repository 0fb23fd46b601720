"""ONNX's own operator test cases (``onnx.backend.test.case.node``, shipped with the onnx
package) run through ``engine.onnx`` for the supported operators.

``python -m engine.onnx.conformance [OP ...]`` prints every case and the pass rate.
float64 cases run in float32 (the engine's float storage) against the case's tolerance.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from .importer import OnnxImportError, SUPPORTED_OPS, load


def cases(ops=None, per_op=None):
    """[(op, TestCase)] for the supported ops (``per_op`` caps the count of each)."""
    from onnx.backend.test.case.node import collect_testcases
    out = []
    want = set(ops or SUPPORTED_OPS)
    counts: dict = {}
    for tc in collect_testcases():
        if tc.model is None or not tc.data_sets:
            continue
        op_types = {n.op_type for n in tc.model.graph.node}
        if len(op_types) != 1:
            continue
        op = next(iter(op_types))
        if op not in want:
            continue
        if per_op is not None and counts.get(op, 0) >= per_op:
            continue
        counts[op] = counts.get(op, 0) + 1
        out.append((op, tc))
    return out


def run_case(tc):
    """(passed, reason)."""
    try:
        m = load(tc.model)
    except (OnnxImportError, TypeError, ValueError) as e:
        return False, f"load: {e}"
    for inputs, outputs in tc.data_sets:
        try:
            got = m(*[np.asarray(x) for x in inputs])
        except Exception as e:   # noqa: BLE001
            return False, f"run: {type(e).__name__}: {str(e)[:200]}"
        got = got if isinstance(got, tuple) else (got,)
        for g, want in zip(got, outputs):
            want = np.asarray(want)
            g = g.numpy()
            if g.shape != want.shape:
                return False, f"shape {g.shape} != {want.shape}"
            if want.dtype.kind in "fc":
                if not np.allclose(g, want, rtol=max(tc.rtol, 1e-5), atol=max(tc.atol, 1e-6), equal_nan=True):
                    return False, f"values differ (max abs err {np.nanmax(np.abs(g - want)):.3g})"
            elif not np.array_equal(g.astype(want.dtype) if want.dtype != np.bool_ else g.astype(bool), want):
                return False, "values differ"
    return True, ""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    todo = cases(argv or None)
    passed, t0 = 0, time.time()
    by_op: dict = {}
    for op, tc in todo:
        ok, why = run_case(tc)
        passed += ok
        by_op.setdefault(op, [0, 0])
        by_op[op][0] += ok
        by_op[op][1] += 1
        print(f"{'PASS' if ok else 'FAIL'} {op:22s} {tc.name}" + ("" if ok else f"  ({why})"), flush=True)
    print(f"\n{passed}/{len(todo)} ONNX node test cases pass ({100.0 * passed / max(len(todo), 1):.1f} %) for "
          f"{len(by_op)} operators in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
