"""A recorded run in exactly the shape the engine produces (engine.explain JSON, profile
entries, metrics), for API tests that must not depend on the OpenCL device."""
import time

from engine.runs import RunRecorder

XSS = "<script>alert(1)</script>"

SOURCE = """#define N 32
__kernel void k0_matmul_bias_relu(__global const float* restrict x,
                                  __global const float* restrict w,
                                  __global const float* restrict b,
                                  __global float* restrict out) {
    const int gid = get_global_id(0);
    if (gid < N) {  /* '<' and '&&' must reach the page as text */
        float acc = 0.0f;
        for (int k = 0; k < 64 && k >= 0; ++k) acc += x[k] * w[k * N + gid];
        out[gid] = fmax(acc + b[gid], 0.0f);
    }
}
"""


def explain_dict():
    n = lambda i, op, shape, srcs, scope, kernel: {  # noqa: E731
        "id": i, "op": op, "shape": shape, "dtype": "float32", "srcs": srcs, "scope": scope,
        "kernel": kernel}
    nodes = [n(0, "buffer", [1, 64], [], "", None), n(1, "buffer", [64, 32], [], "net.0", None),
             n(2, "buffer", [32], [], "net.0", None), n(3, "matmul", [1, 32], [0, 1], "net.0", 0),
             n(4, "add", [1, 32], [3, 2], "net.0", 0), n(5, "relu", [1, 32], [4], XSS, 0),
             n(6, "buffer", [32, 10], [], "net.2", None), n(7, "matmul", [1, 10], [5, 6], "net.2", 1),
             n(8, "max", [1, 1], [7], "", 2), n(9, "sub", [1, 10], [7, 8], "", 2)]
    kernels = [
        {"index": 0, "name": "k0_matmul_bias_relu", "template": "gemm.cl.mako",
         "params": {"M": 1, "N": 32, "K": 64, "epilogue": "fmax(acc + b[gid], 0.0f)", "note": XSS},
         "fused_ops": [3, 4, 5], "ops": ["matmul", "add", "relu"], "global_size": [32],
         "local_size": None, "source": SOURCE, "inputs": [0, 1, 2], "output": 5},
        {"index": 1, "name": "k1_matmul", "template": "gemm.cl.mako", "params": {"M": 1, "N": 10, "K": 32},
         "fused_ops": [7], "ops": ["matmul"], "global_size": [10], "local_size": [10],
         "source": "__kernel void k1_matmul(__global float* o) { o[0] = 1.0f; }", "inputs": [5, 6], "output": 7},
        {"index": 2, "name": "k2_reduce_max_sub", "template": "reduce.cl.mako", "params": {"op": "max"},
         "fused_ops": [8, 9], "ops": ["max", "sub"], "global_size": [1], "local_size": [1],
         "source": "__kernel void k2_reduce_max_sub(__global float* o) { o[0] = 0.0f; }",
         "inputs": [7], "output": 9}]
    return {"nodes": nodes, "kernels": kernels, "device": "Portable Computing Language / cpu"}


def profile():
    return [{"name": k["name"], "template": k["template"], "params": k["params"],
             "fused_ops": k["fused_ops"], "global_size": k["global_size"],
             "local_size": k["local_size"], "time_ns": t, "device": "cpu-pocl"}
            for k, t in zip(explain_dict()["kernels"], (12000, 3000, 800))]


def record_fixture_run(root, steps=30, finish=True, name="fixture mlp"):
    rec = RunRecorder.create(root, name, {"example": "fixture", "model": "mlp", "lr": 0.1})
    rec.log_graph(explain_dict())
    rec.log_kernels(profile(), step=steps - 1)
    for s in range(steps):
        rec.log_metrics(s, s // 10, loss=2.3 / (1 + 0.2 * s), accuracy=min(1.0, 0.1 + 0.03 * s),
                        step_time_s=0.01 + 0.001 * (s % 3), samples_per_s=3200.0 + s)
    if finish:
        rec.finish("finished", device="cpu-pocl", final_loss=2.3 / (1 + 0.2 * (steps - 1)))
    rec.close()
    return rec.run_id


def fixture_nodes():
    """A node list as the cluster would report it now (heartbeats are relative to the call,
    so a slow test session never sees them age)."""
    now = time.time()
    return [{"address": "tcp://10.0.0.1:5555", "devices": ["NVIDIA H100"], "state": "training",
             "heartbeat": now - 0.4, "step_time_s": 0.012, "samples_per_s": 51000.0,
             "share": 0.8, "allreduce_gbps": 9.5},
            {"address": XSS, "devices": ["pocl cpu"], "state": "training",
             "heartbeat": now - 1.1, "step_time_s": 0.013, "samples_per_s": 12500.0,
             "share": 0.2, "allreduce_gbps": 9.1}]
