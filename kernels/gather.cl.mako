## Runs of several float buffers side by side into one (cluster/devicetrain.py: the spans
## of a streamed gradient piece, gathered on the device so the piece goes down to host
## memory in one copy instead of one per parameter; each copy, and each launch, cost
## NVIDIA's driver ~20 us on the host, bench/NOTES.md).
## dst[at_i + k] = s_i[from_i + k] for k < n_i.  Work-items side by side over each run.
## With `narrow` (a streamed all-reduce with the bfloat16 transport: half the bytes), dst
## holds bfloat16 bits, rounded as cluster/transport.py's host conversion rounds: add
## 0x7FFF plus the lowest kept bit and keep the high half (the carry runs into the
## exponent: the largest floats round to Inf); a NaN stays a quiet NaN of its sign,
## whatever its payload.
## params: name, count, narrow
<% src, dst = ("uint", "ushort") if narrow else ("float", "float") %>
% if narrow:
static inline ushort bf16_bits(const uint u)
{
    const uint rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    const int nan = (u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu);
    return (ushort)(nan ? ((u >> 16) | 0x0040u) : rounded);
}
% endif
__kernel void ${name}(${", ".join("__global const %s* restrict s%d, const uint from%d, const uint n%d, const uint at%d" % (src, i, i, i, i) for i in range(count))},
                      __global ${dst}* restrict dst)
{
    const uint gid = get_global_id(0), step = get_global_size(0);
% for i in range(count):
    for (uint k = gid; k < n${i}; k += step)
        dst[at${i} + k] = ${"bf16_bits(s%d[from%d + k])" % (i, i) if narrow else "s%d[from%d + k]" % (i, i)};
% endfor
}
