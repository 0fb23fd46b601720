"""The repository's shape (docs/ARCHITECTURE.md): nothing it tracks refers to files outside
it, and the packages import down the layers only, counting imports inside functions."""
import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()

# package -> the packages of ours it may import (docs/ARCHITECTURE.md, "Layers")
MAY_IMPORT = {
    "kernels": set(),
    "engine": {"kernels"},
    "cluster": {"engine", "kernels"},
    "ui": {"engine", "cluster", "kernels"},
}


def tracked_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout: {exc}")
    return [p for p in out.stdout.decode().split("\0") if p]


def test_no_tracked_file_refers_to_the_shared_folder_outside_the_repository():
    offenders = []
    for rel in tracked_files():
        path = ROOT / rel
        if rel == THIS or not path.is_file():   # this test names it; a file deleted in the working tree
            continue
        for i, line in enumerate(path.read_bytes().split(b"\n"), 1):
            if b"../shared" in line:
                offenders.append(f"{rel}:{i}: {line.decode(errors='replace').strip()[:120]}")
    assert not offenders, ("files outside the repository are not there for a user who clones it; "
                           "point to docs/ instead:\n" + "\n".join(offenders))


def test_every_document_a_tracked_file_names_is_in_the_repository():
    """`DESIGN.md`, `POCL.md`...: a document named without a path must be one of ours."""
    files = tracked_files()
    # tracked ones, and those in the working tree (a copy may carry an older git index)
    ours = {Path(p).name for p in files} | {p.name for p in ROOT.glob("*.md")} | {p.name for p in ROOT.glob("*/*.md")}
    offenders = []
    for rel in files:
        path = ROOT / rel
        if rel == THIS or not path.is_file():
            continue
        text = path.read_bytes().decode(errors="replace")
        for i, line in enumerate(text.split("\n"), 1):
            for name in re.findall(r"\b[\w-]+\.md\b", line):
                if name not in ours:
                    offenders.append(f"{rel}:{i}: {name}")
    assert not offenders, "documents that are not in the repository:\n" + "\n".join(offenders)


def imported_packages(tree, module_parts):
    """(line, top-level package) of every import in `tree`, at any depth: import and
    from-import statements (relative ones resolved against the module's own package
    path `module_parts`), and importlib.import_module / __import__ of a literal name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node.lineno, node.module.split(".")[0]
            elif node.level <= len(module_parts) - 1:   # stays inside the top-level package
                yield node.lineno, module_parts[0]
            else:
                yield node.lineno, "<relative import above the package>"
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
                   or isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module"))):
            yield node.lineno, node.args[0].value.split(".")[0]


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_packages_import_down_the_layers_only(package):
    allowed = MAY_IMPORT[package] | {package}
    offenders = []
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules under {package}/"
    for path in files:
        rel = path.relative_to(ROOT)
        tree = ast.parse(path.read_text(), filename=str(rel))
        for line, top in imported_packages(tree, rel.with_suffix("").parts):
            if (top in MAY_IMPORT or top.startswith("<")) and top not in allowed:
                offenders.append(f"{rel}:{line} imports {top}")
    assert not offenders, (f"{package}/ may import only {sorted(allowed)} of this project "
                           f"(docs/ARCHITECTURE.md, 'Layers'):\n" + "\n".join(offenders))


def test_the_layer_check_sees_imports_inside_functions():
    tree = ast.parse("def f():\n    from cluster import Cluster\n    import ui.app\n"
                     "    importlib.import_module('ui.layers')\nfrom .. import ir\n")
    assert sorted(imported_packages(tree, ("engine", "nn", "functional"))) == [
        (2, "cluster"), (3, "ui"), (4, "ui"), (5, "engine")]
