"""`./dev test` runs the core tests on the Oclgrind simulator and fails on anything it
reports (tests/conftest.py). This checks that machinery: the report parser on Oclgrind's
real output format, and, where Oclgrind is installed, that a kernel with an out-of-bounds
read, a data race or an uninitialised read really fails its test while a clean one passes."""
import os
import shutil
import subprocess
import sys

import importlib.util

import pytest

# tests/conftest.py by path: the name "conftest" may be another folder's in a whole-suite run
_spec = importlib.util.spec_from_file_location("_tests_conftest", os.path.join(os.path.dirname(__file__), "conftest.py"))
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
oclgrind_reports = _conftest.oclgrind_reports

OCLGRIND_ICD = "/usr/lib/oclgrind/liboclgrind-rt-icd.so"

SAMPLE = """
Oclgrind - OpenCL runtime error detected
\tFunction: clGetDeviceInfo
\tError:    CL_INVALID_VALUE
\tFor argument 'param_name'

Invalid read of size 4 at global memory address 0x1000000000040
\tKernel: k
\tEntity: Global(16,0,0) Local(0,0,0) Group(16,0,0)
\t  %0 = load float, float addrspace(1)* %arrayidx, align 4

Read-write data race at local memory address 0x0
\tKernel: race
\tEntity: Global(1,0,0) Local(1,0,0) Group(0,0,0)

OCLGRIND FATAL ERROR (./src/plugins/Uninitialized.cpp:1805)
Unsupported instruction: freeze
"""


def test_report_parser():
    found = oclgrind_reports(SAMPLE)
    assert [f.splitlines()[0] for f in found] == [
        "Invalid read of size 4 at global memory address 0x1000000000040",
        "Read-write data race at local memory address 0x0",
        "OCLGRIND FATAL ERROR (./src/plugins/Uninitialized.cpp:1805)"]
    assert oclgrind_reports("1 passed\nsome other output\n") == []


BAD_TESTS = r'''
import numpy as np, pyopencl as cl, pytest

def _run(src, n=16, local=None):
    p = next(p for p in cl.get_platforms() if "oclgrind" in p.name.lower())
    ctx = cl.Context(p.get_devices()); q = cl.CommandQueue(ctx)
    prg = cl.Program(ctx, src).build()
    out = cl.Buffer(ctx, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=np.zeros(n, np.float32))
    inp = cl.Buffer(ctx, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=np.ones(n, np.float32))
    cl.Kernel(prg, "k")(q, (n,), local, out, inp); q.finish()

def test_clean():
    _run("__kernel void k(__global float* o, __global const float* a) { int i = get_global_id(0); o[i] = a[i]; }")

def test_out_of_bounds():
    _run("__kernel void k(__global float* o, __global const float* a) { int i = get_global_id(0); o[i] = a[i + 1]; }")

def test_race():
    _run("""__kernel void k(__global float* o, __global const float* a) {
        __local float s[16]; int i = get_local_id(0);
        s[i] = a[i] * i; o[get_global_id(0)] = s[(i + 1) % 16]; }""", local=(16,))   # no barrier

def test_uninitialised():
    _run("""__kernel void k(__global float* o, __global const float* a) {
        float t[2]; t[0] = a[0]; o[get_global_id(0)] = t[get_global_id(0) % 2]; }""")
'''


@pytest.mark.skipif(not os.path.exists(OCLGRIND_ICD), reason="oclgrind not installed (apt-get install oclgrind)")
def test_oclgrind_reports_fail_their_tests(tmp_path):
    shutil.copy(os.path.join(os.path.dirname(__file__), "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_kernels.py").write_text(BAD_TESTS)
    (tmp_path / "vendors").mkdir()
    (tmp_path / "vendors" / "oclgrind.icd").write_text(OCLGRIND_ICD + "\n")
    env = dict(os.environ, OCL_ICD_VENDORS=str(tmp_path / "vendors"), OCLGRIND_CHECK_API="1",
               OCLGRIND_DATA_RACES="1", OCLGRIND_UNINITIALIZED="1", ENGINE_FAIL_ON_OCLGRIND="1")
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = p.stdout
    assert p.returncode == 1, out[-3000:]
    assert "PASSED test_kernels.py::test_clean" in out
    for name, what in (("out_of_bounds", "Invalid read"), ("race", "data race"), ("uninitialised", "Uninitiali")):
        assert f"FAILED test_kernels.py::test_{name}" in out, out[-3000:]
        assert what in out
