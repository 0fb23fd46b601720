## Register-blocked GEMM for CPU-like OpenCL devices (PoCL): C[b] = A[b] @ B[b] (+ epilogue).
## A work-item owns R rows x VN columns of C as R vector accumulators, streams a contiguous
## row of B per k with one wide vector load and broadcasts one A scalar per row; plain
## `acc += a * b` (not fma/mad) because that is what PoCL turns into vector FMAs (POCL.md).
## A is read through its fused index expression (a view, a transpose, an im2col window:
## implicit GEMM); B must be contiguous along N.
## params: name, M, N, K, R, VN, args, b_name, b_batch_stride, out_name,
##         a_rows (R SSA blocks: row r reads A at (bz, am<r>, k) into a<r>),
##         batch_index (SSA from bz to batch indices), epilogue (SSA using e_acc, e_m, e_n), value
<%namespace name="ssa" file="_ssa.cl.mako"/>
<% vt = "float%d" % VN if VN > 1 else "float" %>
__kernel void ${name}(${ssa.params(args)})
{
    // dim 0 walks rows, so neighbouring work-items (run back to back by PoCL) stream the
    // same strip of B while it is still in cache
    const int m0 = get_global_id(0) * ${R};
    const int n0 = get_global_id(1) * ${VN};
    const int bz = get_global_id(2);
    if (n0 >= ${N} || m0 >= ${M}) return;
${ssa.block(batch_index)}
% for r in range(R):
    const int am${r} = min(m0 + ${r}, ${M - 1});
    ${vt} acc${r} = (${vt})(0.0f);
% endfor
    __global const float* bp = ${b_name} + bz * ${b_batch_stride} + n0;
    if (n0 + ${VN} <= ${N}) {
        for (int k = 0; k < ${K}; ++k) {
% if VN > 1:
            const ${vt} b = vload${VN}(0, bp + k * ${N});
% else:
            const float b = bp[k * ${N}];
% endif
% for r in range(R):
${ssa.block(a_rows[r], indent='            ')}
            acc${r} += a${r} * b;
% endfor
        }
    } else {
        for (int k = 0; k < ${K}; ++k) {
            float bt[${VN}];
            for (int j = 0; j < ${VN}; ++j) bt[j] = (n0 + j < ${N}) ? bp[k * ${N} + j] : 0.0f;
% if VN > 1:
            const ${vt} b = vload${VN}(0, bt);
% else:
            const float b = bt[0];
% endif
% for r in range(R):
${ssa.block(a_rows[r], indent='            ')}
            acc${r} += a${r} * b;
% endfor
        }
    }
% for r in range(R):
    if (m0 + ${r} < ${M}) {
        const int e_m = m0 + ${r};
        float ct[${VN}];
% if VN > 1:
        vstore${VN}(acc${r}, 0, ct);
% else:
        ct[0] = acc${r};
% endif
        for (int j = 0; j < ${VN}; ++j) {
            const int e_n = n0 + j;
            if (e_n < ${N}) {
                const float e_acc = ct[j];
${ssa.block(epilogue, indent='                ')}
                ${out_name}[(bz * ${M} + e_m) * ${N} + e_n] = ${value};
            }
        }
    }
% endfor
}
