## Several parameters' all-reduced gradients from every rank's bfloat16 values in one
## launch (cluster/devicetrain.py, a streamed all-reduce with the bfloat16 transport):
## out_i[k] = w[0] * x0[off_i + k] + w[1] * x1[off_i + k] + ... in rank order, in float32,
## the same expression on every rank so every rank gets the same bits (no contraction into
## fma: each product and sum rounded as numpy's float32 would).  A bfloat16 value widens
## exactly: its bits are the high half of a float32.  The ranks' weights `w` are read on
## the device (uploaded once every rank's are known), so the sum can be enqueued before
## they are.  Work-items side by side over each parameter in turn; the caller sizes the
## launch (DeviceTrainer._launch_spread), as for kernels/grad_sum.cl.mako.
## params: name, ranks, count
#pragma OPENCL FP_CONTRACT OFF
__kernel void ${name}(
% for j in range(ranks):
                      __global const ushort* restrict x${j},
% endfor
                      __global const float* restrict w,
                      ${", ".join("__global float* restrict out%d, const uint off%d, const uint n%d" % (i, i, i) for i in range(count))})
{
    const uint gid = get_global_id(0), step = get_global_size(0);
% for i in range(count):
    for (uint k = gid; k < n${i}; k += step) {
        float s = w[0] * as_float((uint)x0[off${i} + k] << 16);
%   for j in range(1, ranks):
        s = s + w[${j}] * as_float((uint)x${j}[off${i} + k] << 16);
%   endfor
        out${i}[k] = s;
    }
% endfor
}
