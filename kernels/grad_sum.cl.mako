## Several parameters' all-reduced gradients in one launch (cluster/devicetrain.py, a
## streamed all-reduce in float32): out_i[k] = w[0] * x_0 + w[1] * x_1 + ... in rank order,
## where rank `rank`'s x is this device's own gradient g_i[k] and every other rank j's is
## p_j[off_i + k], its packed gradients uploaded from shared memory.  The same expression
## on every rank, no contraction into fma, so every rank gets numpy's float32 bits.  One
## captured kernel per parameter (and one upload per parameter and rank) cost NVIDIA's
## driver ~20 us each on the host (bench/NOTES.md).  Work-items side by side over each
## parameter in turn; the caller sizes the launch (DeviceTrainer._launch_spread).
## params: name, ranks, rank, count
#pragma OPENCL FP_CONTRACT OFF
<% others = [j for j in range(ranks) if j != rank] %>
__kernel void ${name}(
% for j in others:
                      __global const float* restrict p${j},
% endfor
                      __global const float* restrict w,
                      ${", ".join("__global const float* restrict g%d, __global float* restrict out%d, const uint off%d, const uint n%d" % (i, i, i, i) for i in range(count))})
{
    const uint gid = get_global_id(0), step = get_global_size(0);
% for i in range(count):
    for (uint k = gid; k < n${i}; k += step) {
<%  terms = [("g%d[k]" % i) if j == rank else ("p%d[off%d + k]" % (j, i)) for j in range(ranks)] %>\
        float s = w[0] * ${terms[0]};
%   for j in range(1, ranks):
        s = s + w[${j}] * ${terms[j]};
%   endfor
        out${i}[k] = s;
    }
% endfor
}
