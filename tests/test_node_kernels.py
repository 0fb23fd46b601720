"""The kernels an engine-node runs on its gradients and weights (cluster/devicetrain.py),
on every OpenCL implementation `./dev test` covers (core): the NaN/Inf count of the
refusal check."""
import numpy as np
import pytest


@pytest.mark.core
def test_the_device_counts_every_nan_and_inf_of_all_gradients_in_one_launch():
    """count_nonfinite (kernels/nonfinite.cl.mako): NaN, -NaN, Inf and -Inf anywhere in any
    of the buffers are counted, the largest float, subnormals and signed zeros are not,
    in buffers longer than the launch (strided) and of length one."""
    pytest.importorskip("engine")
    import engine
    from cluster.devicetrain import DeviceTrainer
    rng = np.random.default_rng(3)
    shapes = [(700, 300), (1,), (33,)]
    tr = DeviceTrainer(engine.default_device(), {"name": "sgd", "lr": 0.1},
                       [np.zeros(s, np.float32) for s in shapes], [], 0)
    vals = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    vals[2][:6] = [3.4028235e38, -3.4028235e38, 1e-45, -1e-40, 0.0, -0.0]
    bufs = [tr.device.upload(v) for v in vals]
    launches = []
    real = tr.device.launch
    tr.device.launch = lambda *a, **kw: launches.append(a) or real(*a, **kw)
    assert tr.count_nonfinite(bufs) == 0 and len(launches) == 1
    vals[0].reshape(-1)[[0, 123_456, 209_999]] = [np.nan, np.inf, -np.inf]
    vals[1][0] = -np.nan
    vals[2][32] = np.inf
    bufs = [tr.device.upload(v) for v in vals]
    assert tr.count_nonfinite(bufs) == 5
