## Runs of several float buffers side by side into one (cluster/devicetrain.py: the spans
## of a streamed gradient piece that covers several parameters, gathered on the device so
## the piece goes down to host memory in one copy instead of one per parameter; each copy
## cost NVIDIA's driver ~20 us on the host, bench/NOTES.md).
## dst[at_i + k] = s_i[from_i + k] for k < n_i.  Work-items side by side over each run.
## params: name, count
__kernel void ${name}(${", ".join("__global const float* restrict s%d, const uint from%d, const uint n%d, const uint at%d" % (i, i, i, i) for i in range(count))},
                      __global float* restrict dst)
{
    const uint gid = get_global_id(0), step = get_global_size(0);
% for i in range(count):
    for (uint k = gid; k < n${i}; k += step)
        dst[at${i} + k] = s${i}[from${i} + k];
% endfor
}
