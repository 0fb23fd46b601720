"""Where a node's step goes: each phase of the device path (cluster/devicetrain.py) and of
the host path (--host-optimizer) timed alone in one process, beside the single-process
compiled step (best of 10, ms).  `python -m bench.node_phases [digits wide big]` (default: digits wide)"""
import time, numpy as np, sys

import engine
from engine.nn import functional as F
from engine.examples import digits
from cluster import program, hostpool
from engine import launch, realize as rz
from cluster.devicetrain import DeviceTrainer
from cluster.optimizer import HostOptimizer
from bench.node_vs_local import models
for key in sys.argv[1:] or ("digits", "wide"):
    title, build, x, y, B = models()[key]
    model = build()
    p = program.trace(model, F.cross_entropy, x[:B], y[:B])
    r = p.bind()
    params = list(program.params_of(model).values())
    tr = DeviceTrainer(r.device, {"name": "adam", "lr": 1e-3}, params, [], 0)
    tr.bind(r)
    flat = np.empty(sum(tr.sizes) + 1, np.float32)
    idx = np.arange(B)
    def t(fn, n=10):
        fn(); best = 1e9
        for _ in range(n):
            t0 = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t0)
        return best * 1e3
    fb = t(lambda: tr.forward_backward(r, x[idx], y[idx], flat))
    fbw = t(lambda: tr.forward_backward(r, x[idx], y[idx], flat, weight=0.5))
    ls = t(lambda: tr.local_step(r, x[idx], y[idx]))                    # a ring of one: no download
    ap_ = t(lambda: (tr.apply(r), r.device.synchronize()))
    ck = t(lambda: tr.count_nonfinite([rz.buffer_of(o.node) for o in r.step.outs[1:]]))   # launch + partials read
    whole = t(lambda: (tr.local_step(r, x[idx], y[idx]), tr.apply(r), r.device.synchronize()))
    up = t(lambda: (tr.update(flat), r.device.synchronize()))
    sn = t(lambda: (tr.snapshot(0), r.device.synchronize()))
    dg0 = t(lambda: hostpool.weights_checksum(tr.weights()))
    dg = t(lambda: tr.checksum())
    fin = t(lambda: hostpool.all_finite(flat))
    sc = t(lambda: np.multiply(flat, np.float32(1.0), out=flat))
    # host path for comparison
    r2 = p.bind()
    opt = HostOptimizer({"name": "adam", "lr": 1e-3}, [q.shape for q in params])
    hf = t(lambda: r2.run(params, x[idx], y[idx]))
    grads = [np.ones_like(q) for q in params]
    hu = t(lambda: opt.update(params, grads))
    hc = t(lambda: (hostpool.copy(params), hostpool.copy(opt.state)))
    hd = t(lambda: hostpool.weights_checksum(params))
    m2 = build(); step = engine.training_step(m2, F.cross_entropy, engine.optim.Adam(m2.parameters(), lr=1e-3))
    loc = t(lambda: float(step(x[idx], y[idx]).numpy()))
    print(f"{title} B={B}: ring of one: fwd+bwd+check+loss read {ls:.2f} ms (check alone {ck:.2f}), "
          f"whole step (that + fused Adam + sync) {whole:.2f} ms, "
          f"weighted on the device: fwd+bwd+grad download {fbw:.2f} ms, "
          f"fused Adam alone {ap_:.2f} | device path: fwd+bwd+grad download {fb:.2f} ms, grads up + fused Adam {up:.2f}, snapshot {sn:.2f}, "
          f"digest {dg:.2f} on the device (downloaded and summed on the host: {dg0:.2f}), finite check {fin:.2f}, gradient weighting {sc:.2f} | host path: upload+fwd+bwd+download {hf:.2f}, numpy Adam {hu:.2f}, "
          f"rollback copy {hc:.2f}, checksum {hd:.2f} | local compiled step {loc:.2f} ms (best of 10)")
