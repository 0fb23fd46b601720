import pytest

from ui import create_app
from ui_fixtures import fixture_nodes, record_fixture_run
from ui.nodes import NodeSource


@pytest.fixture
def runs_root(tmp_path):
    return tmp_path / "runs"


@pytest.fixture
def fixture_run(runs_root):
    return record_fixture_run(runs_root)


@pytest.fixture
def client(runs_root, fixture_run):
    app = create_app(runs_root, token="s3cret",
                     node_source=NodeSource(fixture_nodes, "test node list"))
    app.testing = True
    return app.test_client()
