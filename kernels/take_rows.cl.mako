## A batch's rows gathered on the device from the job's rows kept there (cluster/devicetrain.py,
## _upload_batch on a GPU node): only the rows' indices go up each step, instead of the host
## gathering the rows (np.take: ~14 % of a lone GPU node's host step on the small MLP) and
## copying them up (bench/NOTES.md).
## dst[r, c] = src[rows[r], c], an index outside [0, src_rows) clamped into it as np.take's
## mode="clip" does (the host path's gather).  One work-item per element: (column, row).
## params: name, dtype (the engine's: float32, int32, int64, bool)
<%namespace name="ssa" file="_ssa.cl.mako"/>
<% ctype = ssa.attr.CTYPES[dtype] %>
__kernel void ${name}(__global const ${ctype}* restrict src, __global const int* restrict rows,
                      const uint n_rows, const uint cols, const uint src_rows, __global ${ctype}* restrict dst)
{
    const uint c = get_global_id(0), r = get_global_id(1);
    if (c >= cols || r >= n_rows)
        return;
    const int at = rows[r], last = (int)src_rows - 1;     // no clamp(): the lean PoCL prelude lacks it
    const int i = at < 0 ? 0 : (at > last ? last : at);
    dst[(size_t)r * cols + c] = src[(size_t)i * cols + c];
}
