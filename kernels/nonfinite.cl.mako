## How many values of `count` float buffers are NaN or Inf, in one launch (cluster/devicetrain.py:
## a node refuses a step whose gradients hold any).  Decided on the bits (exponent all ones),
## so no compiler option about finite math can fold the test away.  Each work-group writes
## its partial count to out[group]; the host adds them.
## params: name, count (buffers), wg (the work-group size)
__kernel __attribute__((reqd_work_group_size(${wg}, 1, 1)))
void ${name}(
% for i in range(count):
             __global const uint* restrict x${i}, const uint n${i},
% endfor
             __global uint* restrict out)
{
    __local uint part[${wg}];
    const uint lid = get_local_id(0);
    uint bad = 0;
% for i in range(count):
    for (uint i = get_global_id(0); i < n${i}; i += get_global_size(0))
        bad += (x${i}[i] & 0x7f800000u) == 0x7f800000u;
% endfor
    part[lid] = bad;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = ${wg} / 2; s > 0; s >>= 1) {
        if (lid < s)
            part[lid] += part[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0)
        out[get_group_id(0)] = part[0];
}
