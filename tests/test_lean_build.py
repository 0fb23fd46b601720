"""PoCL builds our sources without parsing Clang's opencl-c.h (build_child._lean, issue 10's
cold step: ~0.1 CPU-s per clBuildProgram): the builtins the templates call are declared by
kernels/pocl_builtins.cl.mako instead. Held to the header here: every builtin a template
calls is declared, with the header's exact overloads and attributes; a kernel calling each
of them computes bitwise the same built either way; a source calling a builtin the prelude
lacks still builds (with the whole header) and runs."""
import glob
import os
import re

import numpy as np
import pyopencl as cl
import pytest

import engine
import kernels
from engine import build_child, program_cache

# a declaration as opencl-c.h (`float __ovld __cnfn exp(float x);`) or the prelude writes one
_DECL = re.compile(r"(\w+)\s+(?:__ovld|__mao_f|__mao_o|__attribute__\(\(overloadable, convergent\)\))\s*((?:__\w+\s+)*)"
                   r"(\w+)\(([^()]*)\);")


def _headers():
    """Every PoCL opencl-c.h on this machine: the wheel's and the system's."""
    wheel = os.path.join(os.path.dirname(os.path.dirname(cl.__file__)), "pocl_binary_distribution")
    found = [os.path.join(d, "opencl-c.h") for d, _, files in os.walk(wheel) if "opencl-c.h" in files]
    return sorted(found + glob.glob("/usr/share/pocl/include/opencl-c.h"))


def _decls(text, names=None) -> set:
    """{(return type, name, parameter types)} of the declarations in ``text`` (only ``names``)."""
    out = set()
    text = text.replace("unsigned int", "uint")     # one header spells it out, the other not
    for ret, _, name, params in _DECL.findall(text):
        if names is None or name in names:
            types = tuple(p.strip().rsplit(" ", 1)[0] if " " in p.strip() else p.strip()
                          for p in params.split(",") if p.strip())
            out.add((ret, name, types))
    return out


def _called_in_templates() -> set:
    """The identifiers called in the OpenCL C of kernels/*.cl.mako (not in its Python or comments)."""
    names = set()
    for path in glob.glob(os.path.join(kernels.TEMPLATE_DIR, "*.cl.mako")):
        text = open(path).read()
        text = re.sub(r"<%.*?%>", "", text, flags=re.S)
        text = re.sub(r"</?%\w+[^>]*>", "", text)       # <%def name="step()">
        text = re.sub(r"\$\{[^}]*\}", "0", text)
        text = "\n".join(l.split("//")[0] for l in text.splitlines() if not l.lstrip().startswith(("##", "%")))
        names |= set(re.findall(r"\b([a-z_]\w*)\s*\(", text))
    return names


def test_the_prelude_declares_every_builtin_the_templates_call_as_the_header_does():
    headers = _headers()
    if not headers:
        pytest.skip("no PoCL opencl-c.h on this machine")
    prelude = _decls(kernels.render("pocl_builtins"))
    declared = {name for _, name, _ in prelude}
    assert {"get_global_id", "barrier", "min", "exp", "erf"} <= declared
    for header in headers:
        with open(header) as f:
            text = f.read()
        builtins = {name for _, name, _ in _decls(text)}
        missing = (_called_in_templates() & builtins) - declared
        assert not missing, f"templates call builtins the PoCL prelude does not declare: {sorted(missing)}"
        want = _decls(text, declared)
        assert prelude == want, (f"{header}: prelude only {sorted(prelude - want)[:5]}, "
                                 f"header only {sorted(want - prelude)[:5]}")
        # the header's attributes: const for all but barrier (convergent) and atomic_add (neither)
        for line in text.splitlines():
            m = _DECL.search(line)
            if m and m.group(3) == "atomic_add":
                assert m.group(2) == "", line
            elif m and m.group(3) in declared:
                assert ("__conv" if m.group(3) == "barrier" else "__cnfn") in m.group(2), line


_EVERY_BUILTIN = """
__kernel void mao_every_builtin(__global const float* restrict x, __global float* restrict out,
                                __global int* restrict iout)
{
    const int i = get_global_id(0);
    const float v = x[i];
    __local float t[4];
    t[get_local_id(0)] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    out[8 * i + 0] = exp(v);
    out[8 * i + 1] = log(v);
    out[8 * i + 2] = sqrt(v);
    out[8 * i + 3] = tanh(v);
    out[8 * i + 4] = erf(v);
    out[8 * i + 5] = mad(v, t[(get_local_id(0) + 1) % 4], 0.5f);
    out[8 * i + 6] = min(v, 1.0f) + max(v, -1.0f);
    out[8 * i + 7] = (float)(get_group_id(0) + get_global_size(0)) + NAN * (v != v) + INFINITY * 0;
    iout[i] = min(max(i - 3, 0), 5) + max((int)get_local_id(0), 2);
    __local int n;
    if (get_local_id(0) == 0)
        n = 0;
    barrier(CLK_LOCAL_MEM_FENCE);
    atomic_add(&n, 1);
    barrier(CLK_LOCAL_MEM_FENCE);
    atomic_add(&iout[i], n);
}
"""


@pytest.mark.core
def test_a_kernel_calling_each_declared_builtin_computes_the_same_built_either_way():
    dev = engine.default_device()
    lean = build_child._lean(dev)
    if lean is None:
        pytest.skip("only PoCL builds the lean way")
    x = np.array([0.0, -0.0, 1.0, -1.0, 0.5, 3.0, -20.0, 88.0, 1e-40, np.inf, -np.inf, np.nan,
                  1e30, -1e-3, 2.5e-7, 7.0], np.float32)
    results = []
    for source, options in ((_EVERY_BUILTIN, ""), (lean["prelude"] + _EVERY_BUILTIN, lean["option"])):
        prog = cl.Program(dev.context, source).build(options)     # the lean one must build as it is
        xb = cl.Buffer(dev.context, cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR, hostbuf=x)
        out, iout = np.zeros(8 * x.size, np.float32), np.zeros(x.size, np.int32)
        ob = cl.Buffer(dev.context, cl.mem_flags.WRITE_ONLY, out.nbytes)
        ib = cl.Buffer(dev.context, cl.mem_flags.WRITE_ONLY, iout.nbytes)
        prog.mao_every_builtin(dev.queue, (x.size,), (4,), xb, ob, ib)
        cl.enqueue_copy(dev.queue, out, ob)
        cl.enqueue_copy(dev.queue, iout, ib, is_blocking=True)
        results.append((out.view(np.uint32).copy(), iout))
    assert np.array_equal(results[0][0], results[1][0]) and np.array_equal(results[0][1], results[1][1])
    assert np.isclose(results[1][0][0:8].view(np.float32)[0], 1.0)        # exp(0)
    assert results[1][1][0] == 2 + 4                                      # + the work-group's atomic count


@pytest.mark.core
def test_a_source_calling_a_builtin_the_prelude_lacks_still_builds_and_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path))
    src = ("__kernel void mao_clamped(__global float* o) "
           "{ o[get_global_id(0)] = clamp((float)get_global_id(0), 1.0f, 2.0f) + fmax(0.25f, 0.5f); }")
    dev = engine.default_device()
    dev = engine.runtime.Device(dev.cl_device, dev.index)      # empty memory cache
    ck = dev.build(program_cache._BundledSpec("mao_clamped", src))
    buf = cl.Buffer(dev.context, cl.mem_flags.READ_WRITE, 16)
    ck.kernel(dev.queue, (4,), None, buf)
    out = np.empty(4, np.float32)
    cl.enqueue_copy(dev.queue, out, buf, is_blocking=True)
    assert out.tolist() == [1.5, 1.5, 2.5, 2.5]
