## One parameter's all-reduced gradient from every rank's bfloat16 values (cluster/
## devicetrain.py, a streamed all-reduce with the bfloat16 transport): out[i] =
## w[0] * x0[off + i] + w[1] * x1[off + i] + ... in rank order, in float32, the same
## expression on every rank so every rank gets the same bits (no contraction into fma:
## each product and sum rounded as numpy's float32 would).  A bfloat16 value widens
## exactly: its bits are the high half of a float32.  The ranks' weights `w` are read
## on the device (uploaded once every rank's are known), so the sum can be enqueued
## before they are.
## params: name, ranks
#pragma OPENCL FP_CONTRACT OFF
__kernel void ${name}(
% for j in range(ranks):
                      __global const ushort* restrict x${j},
% endfor
                      __global const float* restrict w, const uint off, const uint n, __global float* restrict out)
{
    const uint i = get_global_id(0);
    if (i >= n)
        return;
    float s = w[0] * as_float((uint)x0[off + i] << 16);
% for j in range(1, ranks):
    s = s + w[${j}] * as_float((uint)x${j}[off + i] << 16);
% endfor
    out[i] = s;
}
