## Copies `count` float buffers into as many others in one launch (cluster/devicetrain.py: the
## rollback snapshot of a node's weights and optimizer state, taken before every Nth update).
## One clEnqueueCopyBuffer per buffer cost the host ~20 us each on NVIDIA's driver, and a
## 3-layer MLP with Adam has 18 buffers (bench/NOTES.md).  Work-items side by side over each
## buffer in turn, 4 floats at a time (the buffers are whole allocations: aligned), the last
## n % 4 one by one.  A GPU needs many work-items for this to run at memory speed: the caller
## sizes the launch (DeviceTrainer._copy_all).
## params: name, count
__kernel void ${name}(${", ".join("__global const float* restrict s%d, __global float* restrict d%d, const uint n%d" % (i, i, i) for i in range(count))})
{
    const uint gid = get_global_id(0), step = get_global_size(0);
% for i in range(count):
    for (uint k = gid; k < n${i} / 4; k += step)
        ((__global float4*)d${i})[k] = ((__global const float4*)s${i})[k];
    for (uint k = n${i} / 4 * 4 + gid; k < n${i}; k += step)
        d${i}[k] = s${i}[k];
% endfor
}
