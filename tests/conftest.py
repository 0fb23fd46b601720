import os
import tempfile

import numpy as np
import pytest

# Each test session builds into its own program cache unless told otherwise, so a test
# that checks cold/warm builds sees a known state; CI can share one via ENGINE_CACHE_DIR.
os.environ.setdefault("ENGINE_CACHE_DIR", os.path.join(tempfile.gettempdir(), "many-as-one-test-cache"))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
