"""The `engine` command's extensions: `engine ui` and `engine train --nodes` come from ui/
and cluster/ through entry points (setup.cfg, group many_as_one.commands); without them
the engine's own commands keep working."""
import importlib.metadata
from importlib.metadata import EntryPoint

import pytest

from engine import cli


def run(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as exc:   # argparse: --help, or a usage error
        code = exc.code
    out = capsys.readouterr()
    return code, out.out + out.err


def test_the_installed_extensions_add_ui_and_train_nodes(capsys):
    try:
        importlib.metadata.distribution("many-as-one")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the project is not installed here (entry points come from `pip install -e .`; ./dev does it)")
    names = {ep.name: ep.value for ep in cli.entry_points(group=cli.COMMANDS_GROUP)}
    assert names == {"ui": "ui.commands:register", "train": "cluster.commands:register"}, \
        "re-install the project (./dev does it when setup.cfg changes)"
    code, text = run(["ui", "--help"], capsys)
    assert code == 0 and "usage: engine ui" in text and "--token" in text
    code, text = run(["train", "--help"], capsys)
    assert code == 0 and "--nodes" in text and "--checkpoint-dir" in text


def test_without_extensions_the_engine_commands_still_work(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli, "entry_points", lambda group: [])
    code, text = run(["--help"], capsys)
    assert code == 0 and "devices" in text and "data" in text and "ui" not in text.split("options:")[0]
    code, text = run(["train", "--nodes", "tcp://127.0.0.1:9"], capsys)
    assert code == 2 and "unrecognized arguments: --nodes" in text
    code, text = run(["data", "digits", str(tmp_path / "d.parquet")], capsys)
    assert code == 0 and "wrote 1797 rows" in text


def test_a_broken_extension_is_reported_and_skipped(monkeypatch, capsys, tmp_path):
    broken = EntryPoint(name="data", value="no_such_package.commands:register", group=cli.COMMANDS_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [broken])
    code, text = run(["data", "digits", str(tmp_path / "d.parquet")], capsys)
    assert code == 0 and "wrote 1797 rows" in text
    assert "the 'data' commands of no_such_package.commands:register are unavailable: ModuleNotFoundError" in text


def test_an_extension_only_loads_for_its_own_command(monkeypatch, capsys):
    loaded = []
    ep = EntryPoint(name="ui", value="ui.commands:register", group=cli.COMMANDS_GROUP)
    monkeypatch.setattr(EntryPoint, "load", lambda self: loaded.append(self.name) or (lambda commands: None))
    monkeypatch.setattr(cli, "entry_points", lambda group: [ep])
    with pytest.raises(SystemExit):
        cli.main(["tune", "--help"])
    assert loaded == []
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert loaded == ["ui"]


def test_engine_onnx_is_served_by_engine_onnx_cli(capsys):
    pytest.importorskip("onnx")
    code, text = run(["onnx", "ops"], capsys)
    assert code == 0 and "supported operators" in text and "MatMul" in text
