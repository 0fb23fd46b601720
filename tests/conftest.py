import os
import re
import tempfile

import numpy as np
import pytest

# Each test session builds into its own program cache unless told otherwise, so a test
# that checks cold/warm builds sees a known state; CI can share one via ENGINE_CACHE_DIR.
os.environ.setdefault("ENGINE_CACHE_DIR", os.path.join(tempfile.gettempdir(), "many-as-one-test-cache"))


# The core op, gradient, fusion and optimizer tests: `./dev test` also runs them (-m core)
# on Debian's PoCL and on Oclgrind. Mark more with @pytest.mark.core.
CORE_FILES = {"test_ops.py", "test_fusion.py", "test_optim.py", "test_compile.py", "test_devices.py",
              "test_gemm_variants.py"}


def pytest_configure(config):
    config.addinivalue_line("markers", "core: run on every OpenCL implementation `./dev test` covers "
                                       "(wheel PoCL, Debian PoCL, Oclgrind)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in CORE_FILES:
            item.add_marker(pytest.mark.core)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# --- Oclgrind: any error it reports fails the test that caused it ---------------------------
# `./dev test` runs the core tests on the Oclgrind simulator with ENGINE_FAIL_ON_OCLGRIND=1.
# Oclgrind prints its reports (invalid accesses, data races, uninitialised values, API
# errors, its own fatal errors) to stderr, which pytest captures per test.
_OCLGRIND_BLOCK = re.compile(
    r"^(Invalid (read|write)|.*data race|Uninitiali[sz]ed value|OCLGRIND|Oclgrind - |.*divergence|Unaligned"
    r"|.*out of bounds|Atomic)", re.I)
# Not errors of ours: pyopencl asks every device for properties newer than Oclgrind 21.10's
# OpenCL 1.2 knows (once per kernel it sets up); the answer is CL_INVALID_VALUE.
# And a failed clBuildProgram is never silent: the engine raises BuildError with the log
# (tests that provoke one on purpose expect exactly that).
_OCLGRIND_BENIGN = re.compile(r"Function: clGetDeviceInfo\s+Error:\s+CL_INVALID_VALUE\s+For argument 'param_name'"
                              r"|Function: clBuildProgram\s+Error:\s+CL_BUILD_PROGRAM_FAILURE\s*$")


def oclgrind_reports(text: str) -> list:
    """The error reports in Oclgrind's output ``text`` (blocks separated by blank lines)."""
    found = []
    for block in re.split(r"\n\s*\n", text or ""):
        block = block.strip("\n")
        first = block.lstrip().split("\n", 1)[0]
        if _OCLGRIND_BLOCK.match(first.strip()) or "\tKernel: " in block:
            if not _OCLGRIND_BENIGN.search(block):
                found.append(block.strip())
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if os.environ.get("ENGINE_FAIL_ON_OCLGRIND") != "1":
        return
    rep = outcome.get_result()
    text = "\n".join(content for name, content in rep.sections if name == f"Captured stderr {rep.when}")
    reports = oclgrind_reports(text)
    if reports and rep.outcome != "failed":
        rep.outcome = "failed"
        rep.longrepr = (f"Oclgrind reported {len(reports)} error(s) during {rep.when}:\n\n" +
                        "\n\n".join(reports[:20]))
