## float32 -> bfloat16 bits, round to nearest even (cluster/devicetrain.py: a streamed
## all-reduce with the bfloat16 transport sends half the bytes).  The same rounding as
## cluster/transport.py's host conversion: add 0x7FFF plus the lowest kept bit and keep the
## high half (the carry runs into the exponent: the largest floats round to Inf); a NaN
## stays a quiet NaN of its sign, whatever its payload.
## dst[dst_off + i] = bf16(src[src_off + i]) for i < n.
## params: name
__kernel void ${name}(__global const uint* restrict src, const uint src_off, const uint n,
                      __global ushort* restrict dst, const uint dst_off)
{
    const uint i = get_global_id(0);
    if (i >= n)
        return;
    const uint u = src[src_off + i];
    const uint rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    const int nan = (u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu);
    dst[dst_off + i] = (ushort)(nan ? ((u >> 16) | 0x0040u) : rounded);
}
