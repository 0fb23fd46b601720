## Copies `count` float buffers into as many others in one launch (cluster/devicetrain.py: the
## rollback snapshot of a node's weights and optimizer state, taken before every Nth update).
## One clEnqueueCopyBuffer per buffer cost the host ~20 us each on NVIDIA's driver, and a
## 3-layer MLP with Adam has 18 buffers (bench/NOTES.md).  Work-items side by side over each
## buffer in turn: contiguous runs per warp on a GPU, vectorised across work-items on a CPU.
## params: name, count
__kernel void ${name}(${", ".join("__global const float* restrict s%d, __global float* restrict d%d, const uint n%d" % (i, i, i) for i in range(count))})
{
    const uint gid = get_global_id(0), step = get_global_size(0);
% for i in range(count):
    for (uint k = gid; k < n${i}; k += step)
        d${i}[k] = s${i}[k];
% endfor
}
