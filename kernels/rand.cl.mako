## Counter-based uniform random numbers in [0, 1): a stateless hash of (seed, offset + gid),
## so a replayed step only changes the two scalar arguments.
## params: name, numel
__kernel void ${name}(__global float* restrict out, const uint seed, const uint offset)
{
    const uint gid = get_global_id(0);
    if (gid >= ${numel}u) return;
    uint x = (offset + gid) * 0x9E3779B9u ^ seed;
    x ^= x >> 16; x *= 0x7feb352du;
    x ^= x >> 15; x *= 0x846ca68bu;
    x ^= x >> 16;
    x ^= seed * 0x85ebca6bu;
    x ^= x >> 13; x *= 0xc2b2ae35u;
    x ^= x >> 16;
    out[gid] = (float)(x >> 8) * (1.0f / 16777216.0f);
}
