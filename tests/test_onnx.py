"""engine.onnx.load: torch-exported models equal onnxruntime, initializers are trainable
parameters, external data, errors that name the node, and ONNX's own node test cases."""
import os
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

import engine  # noqa: E402
import engine.onnx as eonnx  # noqa: E402
from engine.nn import functional as F  # noqa: E402


def _export(model, args, path, **kw):
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=False, opset_version=kw.pop("opset", 17),
                          input_names=kw.pop("input_names", ["x"]), output_names=kw.pop("output_names", ["y"]), **kw)
    return str(path)


def _ort(path, feeds):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = torch.nn.Linear(6, 16), torch.nn.Linear(16, 8), torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc3(torch.nn.functional.gelu(self.fc2(torch.relu(self.fc1(x)))))


class ResNetish(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.bn0 = torch.nn.BatchNorm2d(4)
        self.c1 = torch.nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(4)
        self.c2 = torch.nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.pool = torch.nn.MaxPool2d(2)
        self.head = torch.nn.Linear(4, 5)

    def forward(self, x):
        x = self.bn0(torch.relu(self.stem(x)))          # BN after ReLU: stays a BatchNormalization node
        y = self.c2(torch.relu(self.bn1(self.c1(x))))
        x = self.pool(torch.relu(x + y))                 # residual add
        x = torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.head(x)


def _randomize_bn(m):
    g = torch.Generator().manual_seed(0)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(mod.num_features, generator=g) * 0.1)


def test_mlp_matches_onnxruntime_and_fine_tunes(tmp_path):
    torch.manual_seed(0)
    path = _export(MLP(), (torch.randn(5, 6),), tmp_path / "mlp.onnx", dynamic_axes={"x": {0: "n"}})
    m = eonnx.load(path)
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    want = _ort(path, {"x": x})[0]
    np.testing.assert_allclose(m(engine.tensor(x)).numpy(), want, rtol=1e-4, atol=1e-5)
    names = [n for n, _ in m.named_parameters()]
    assert "fc1.weight" in names and len(m.parameters()) == 6
    # fine-tune: a few Adam steps on a fixed regression target lower the loss
    xb = engine.tensor(np.random.default_rng(1).standard_normal((16, 6)).astype(np.float32))
    yb = engine.tensor(np.random.default_rng(2).standard_normal((16, 3)).astype(np.float32))
    opt = engine.optim.Adam(m.parameters(), lr=3e-2)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = F.mse_loss(m(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_resnet_style_cnn_matches_onnxruntime(tmp_path):
    torch.manual_seed(0)
    net = ResNetish()
    _randomize_bn(net)
    path = _export(net, (torch.randn(2, 2, 8, 8),), tmp_path / "cnn.onnx")
    ops_used = {n.op_type for n in onnx.load(path).graph.node}
    assert {"Conv", "BatchNormalization", "Add", "MaxPool"} <= ops_used, ops_used
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8)).astype(np.float32)
    got = eonnx.load(path)(x).numpy()
    np.testing.assert_allclose(got, _ort(path, {"x": x})[0], rtol=1e-4, atol=1e-5)


class EncoderLayer(torch.nn.Module):
    """A post-norm transformer encoder layer (what nn.TransformerEncoderLayer computes;
    torch 2.13's TorchScript exporter cannot trace that class itself)."""

    def __init__(self, d=16, heads=2, ff=32):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.ff1, self.ff2 = torch.nn.Linear(d, ff), torch.nn.Linear(ff, d)

    def forward(self, x):
        x = self.ln1(x + self.attn(x, x, x, need_weights=True)[0])
        return self.ln2(x + self.ff2(torch.nn.functional.gelu(self.ff1(x))))


def test_transformer_encoder_layer_matches_onnxruntime(tmp_path):
    torch.manual_seed(0)
    path = _export(EncoderLayer(), (torch.randn(2, 5, 16),), tmp_path / "enc.onnx")   # MHA exports static shapes
    ops_used = {n.op_type for n in onnx.load(path).graph.node}
    assert {"MatMul", "Softmax", "LayerNormalization"} <= ops_used, ops_used
    m = eonnx.load(path)
    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)
    np.testing.assert_allclose(m(x).numpy(), _ort(path, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_external_data_and_model_proto(tmp_path):
    torch.manual_seed(0)
    path = _export(MLP(), (torch.randn(2, 6),), tmp_path / "mlp.onnx")
    proto = onnx.load(path)
    ext = tmp_path / "ext"
    ext.mkdir()
    onnx.save_model(proto, str(ext / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert os.path.getsize(ext / "weights.bin") > 0
    x = np.ones((2, 6), np.float32)
    a = eonnx.load(str(ext / "model.onnx"))(x).numpy()
    b = eonnx.load(onnx.load(path))(x).numpy()      # a ModelProto
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(a, _ort(path, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_errors_name_node_and_op():
    from onnx import helper, TensorProto
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    g = helper.make_graph([helper.make_node("Sin", ["x"], ["y"], name="my_sin")], "g", [x], [y])
    with pytest.raises(eonnx.OnnxImportError, match=r"my_sin.*Sin"):
        eonnx.load(helper.make_model(g))
    g = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"], name="bad_reshape")], "g", [x], [y],
                          [helper.make_tensor("s", TensorProto.INT64, [1], [3])])
    with pytest.raises(eonnx.OnnxImportError, match=r"bad_reshape.*Reshape"):
        eonnx.load(helper.make_model(g))(np.ones(2, np.float32))


def test_shape_subgraph_is_folded_on_the_host(tmp_path):
    class Flat(torch.nn.Module):
        def forward(self, x):
            return x.reshape(x.shape[0], -1) * 2

    path = _export(Flat(), (torch.randn(3, 2, 2),), tmp_path / "flat.onnx", dynamic_axes={"x": {0: "n"}})
    assert "Shape" in {n.op_type for n in onnx.load(path).graph.node}
    m = eonnx.load(path)
    for n in (3, 5):
        x = np.random.default_rng(n).standard_normal((n, 2, 2)).astype(np.float32)
        np.testing.assert_allclose(m(x).numpy(), x.reshape(n, 4) * 2, rtol=1e-6)


# a few of ONNX's node test cases per op (the full sweep: python -m engine.onnx.conformance)
SAMPLE_OPS = ["Conv", "MaxPool", "AveragePool", "BatchNormalization", "Gemm", "Softmax", "LayerNormalization",
              "Slice", "Gather", "Split", "Expand", "Where", "ReduceMean", "Gelu"]


def test_onnx_node_test_cases_sample():
    from engine.onnx.conformance import cases, run_case
    todo = cases(SAMPLE_OPS, per_op=1)
    assert len(todo) >= len(SAMPLE_OPS)
    failed = []
    for op, tc in todo:
        ok, why = run_case(tc)
        if not ok:
            failed.append(f"{tc.name}: {why}")
    assert len(failed) <= len(todo) // 10, "\n".join(failed)


def test_cli_run(tmp_path, capsys):
    from engine.onnx.cli import main
    torch.manual_seed(0)
    path = _export(MLP(), (torch.randn(2, 6),), tmp_path / "mlp.onnx")
    np.save(tmp_path / "x.npy", np.ones((2, 6), np.float32))
    assert main(["run", path, "--input", str(tmp_path / "x.npy"), "--repeat", "1", "--save", str(tmp_path / "o.npz")]) == 0
    out = capsys.readouterr().out
    assert "y: shape (2, 3)" in out and "first run" in out
    np.testing.assert_allclose(np.load(tmp_path / "o.npz")["y"], _ort(path, {"x": np.ones((2, 6), np.float32)})[0],
                               rtol=1e-4, atol=1e-5)
    assert main(["ops"]) == 0 and "Conv" in capsys.readouterr().out
