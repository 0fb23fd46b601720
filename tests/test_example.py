"""The bundled example trains for real to the accuracy the README promises."""
import pytest

from engine.examples import digits


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_digits_reaches_97_percent(model):
    _, hist = digits.train(model, epochs=30, progress=False)
    assert hist[-1]["test_accuracy"] >= 0.97, hist[-1]
    assert hist[-1]["loss"] < hist[0]["loss"]
