## How many values of `count` float buffers are NaN or Inf, in one launch (cluster/devicetrain.py:
## a node refuses a step whose gradients hold any).  Decided on the bits (exponent all ones),
## so no compiler option about finite math can fold the test away.  Each work-item reads
## 8 neighbouring values at a time (a vector aligned like a uint: any buffer offset works),
## work-items side by side: one vector compare per load on a CPU, whole contiguous rows per
## warp on a GPU; a scalar loop on each buffer's last n % 8.  Each work-group writes its
## partial count to out[group]; the host adds them.  A group that found any also adds its
## count to total[0], which only the host clears: an optimizer update gated on it
## (engine.optim's found_inf) is skipped on the device, with no read-back in between.
## params: name, count (buffers), wg (the work-group size)
#ifndef MAO_UINT8_U
#define MAO_UINT8_U
typedef uint8 mao_uint8_u __attribute__((aligned(4)));
#endif
__kernel __attribute__((reqd_work_group_size(${wg}, 1, 1)))
void ${name}(
% for i in range(count):
             __global const uint* restrict x${i}, const uint n${i},
% endfor
             __global uint* restrict out, volatile __global int* total)
{
    __local uint part[${wg}];
    const uint lid = get_local_id(0), gid = get_global_id(0), step = get_global_size(0);
    int8 lanes = (int8)(0);            /* minus the count per lane: a true compare is -1 */
    uint bad = 0;
% for i in range(count):
    for (uint i = gid; i < n${i} / 8; i += step)
        lanes += (((__global const mao_uint8_u*)x${i})[i] & 0x7f800000u) == 0x7f800000u;
    for (uint i = n${i} / 8 * 8 + gid; i < n${i}; i += step)
        bad += (x${i}[i] & 0x7f800000u) == 0x7f800000u;
% endfor
    bad -= lanes.s0 + lanes.s1 + lanes.s2 + lanes.s3 + lanes.s4 + lanes.s5 + lanes.s6 + lanes.s7;
    part[lid] = bad;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = ${wg} / 2; s > 0; s >>= 1) {
        if (lid < s)
            part[lid] += part[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) {
        out[get_group_id(0)] = part[0];
        if (part[0])
            atomic_add(total, (int)part[0]);
    }
}
