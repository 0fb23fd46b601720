"""docs/API.md is what scripts/api_reference.py writes from the code's signatures and
docstrings (regenerate it with `python scripts/api_reference.py` after changing a public
signature or docstring)."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_api_reference_is_the_generated_one():
    spec = importlib.util.spec_from_file_location("api_reference", ROOT / "scripts" / "api_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (ROOT / "docs" / "API.md").read_text() == mod.render(), \
        "docs/API.md is out of date: run `python scripts/api_reference.py`"
