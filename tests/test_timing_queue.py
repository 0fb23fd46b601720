"""A device's work goes on a queue without profiling unless someone times launches
(engine.profile, ENGINE_DEBUG>=4, a node's timeline: engine.device.timing): NVIDIA's driver
costs the host ~6 us more per launch on a profiling queue.  Switching queues must keep the
order of one in-order queue."""
import numpy as np
import pyopencl as cl
import pytest

import engine

PROFILING = cl.command_queue_properties.PROFILING_ENABLE


@pytest.mark.core
def test_launches_are_timed_only_inside_profile_and_keep_their_order():
    """A value computed before a profile block, changed inside it and read after it is
    right (float64 reference): work enqueued on either side of a switch runs in order; the
    block's launches carry device times; outside it the queue does not profile."""
    dev = engine.default_device()
    a = np.random.default_rng(7).standard_normal(300_000).astype(np.float32)
    x = engine.tensor(a)
    y = x * 2.0 + 1.0
    y.realize()
    assert not dev.queue.properties & PROFILING
    with engine.profile() as p:
        assert dev.queue.properties & PROFILING
        z = y * 3.0 - 1.0
        z.realize()
    assert not dev.queue.properties & PROFILING
    w = (z - y).numpy()
    ref = a.astype(np.float64) * 2 + 1
    np.testing.assert_allclose(w, ref * 3 - 1 - ref, rtol=1e-5, atol=1e-5)
    assert p.kernels and all(k["time_ns"] is not None and k["time_ns"] >= 0 for k in p.kernels)
    with engine.profile():              # and back again, twice over the same buffers
        y = y * 0.5
        y.realize()
    np.testing.assert_allclose((y - z).numpy(), ref * 0.5 - (ref * 3 - 1), rtol=1e-5, atol=1e-5)
