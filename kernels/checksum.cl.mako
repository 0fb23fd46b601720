## The weights' checksum that nodes compare every K steps (cluster/devicetrain.py): the sum
## over i of bits(x[i]) * (2 * (base + i) + 1), modulo 2^64, in exact integer arithmetic, so
## every device, and numpy (cluster/hostpool.py weights_checksum), gets the same value in
## any order; an odd weight per position sees any changed bit and any two swapped values.
## One partial sum per work-group of ${wg} work-items, at out[first + group].
## params: name, wg (the work-group size)
__kernel __attribute__((reqd_work_group_size(${wg}, 1, 1)))
void ${name}(__global const uint* restrict x, const uint n, const ulong base,
             __global ulong* restrict out, const uint first)
{
    __local ulong part[${wg}];
    const uint lid = get_local_id(0);
    ulong acc = 0;
    for (uint i = get_global_id(0); i < n; i += get_global_size(0))
        acc += (ulong)x[i] * (2 * (base + i) + 1);
    part[lid] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = ${wg} / 2; s > 0; s >>= 1) {
        if (lid < s)
            part[lid] += part[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0)
        out[first + get_group_id(0)] = part[0];
}
