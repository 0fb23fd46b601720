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


# element types the engine cannot hold (its storage is float32 / int32 / int64 / bool)
# (narrower integers are widened to int64 and float64 computed in float32: those cases run)
UNSUPPORTED_DTYPES = ("float16", "bfloat16", "float8", "float4", "int4", "uint4", "int2", "uint2", "string",
                      "complex")


def _type_names(tc):
    import onnx
    from onnx import helper
    names = set()
    for vi in list(tc.model.graph.input) + list(tc.model.graph.output):
        et = vi.type.tensor_type.elem_type
        if et:
            names.add(onnx.TensorProto.DataType.Name(et).lower())
    for n in tc.model.graph.node:
        for at in n.attribute:
            if at.name == "to" and at.type == onnx.AttributeProto.INT:
                names.add(onnx.TensorProto.DataType.Name(helper.get_attribute_value(at)).lower())
    return names


def needs_unsupported_dtype(tc) -> bool:
    """True when the case's inputs, outputs or Cast targets use a type the engine cannot store."""
    return any(t.startswith(u) for t in _type_names(tc) for u in UNSUPPORTED_DTYPES)


NONDETERMINISTIC = ("test_training_dropout",)   # compares one specific random mask


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
            try:
                g = g.numpy()
            except Exception as e:   # noqa: BLE001  (kernels build and run here)
                return False, f"run: {type(e).__name__}: {str(e)[:200]}"
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
    skipped = []
    for op, tc in list(todo):
        if needs_unsupported_dtype(tc) or tc.name.startswith(NONDETERMINISTIC):
            skipped.append(tc.name)
            todo.remove((op, tc))
            print(f"SKIP {op:22s} {tc.name}  ({'random mask' if tc.name.startswith(NONDETERMINISTIC) else 'element type the engine cannot store'})")
    for op, tc in todo:
        ok, why = run_case(tc)
        passed += ok
        by_op.setdefault(op, [0, 0])
        by_op[op][0] += ok
        by_op[op][1] += 1
        print(f"{'PASS' if ok else 'FAIL'} {op:22s} {tc.name}" + ("" if ok else f"  ({why})"), flush=True)
    print(f"\n{passed}/{len(todo)} ONNX node test cases pass ({100.0 * passed / max(len(todo), 1):.1f} %) for "
          f"{len(by_op)} operators in {time.time() - t0:.0f} s; {len(skipped)} more cases skipped "
          f"(float16/bfloat16/float8/int4/string element types, or a specific random dropout mask)")
    failed = {op: n - p for op, (p, n) in by_op.items() if p < n}
    if failed:
        print("failures by operator: " + ", ".join(f"{op} {k}" for op, k in sorted(failed.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
