## Register-blocked GEMM for CPU-like OpenCL devices (PoCL): C[b] = A[b] @ B[b] (+ epilogue).
## A work-item owns R rows x W = 16*NV columns of C as R*NV float16 accumulators. B comes
## as panels [Nb][K][W] and (when a_packed) A as panels [Mb][K][R], so each k step is NV
## contiguous vector loads plus R scalars; plain `acc += a * b` (not fma/mad) because that
## is what PoCL turns into vector FMAs (POCL.md). Without a_packed, A is read through its
## fused index expression (implicit GEMM: a convolution's im2col window is never stored).
## params: name, M, N, K, R, NV, Mb, Nb, args, a_packed, a_name, a_rows (R SSA blocks
##         defining a<r> from am<r> and k), b_name, out_name, batch_index (SSA from bz),
##         epilogue (SSA using e_acc, e_m, e_n), value
<%namespace name="ssa" file="_ssa.cl.mako"/>
<% W = 16 * NV %>
__kernel void ${name}(${ssa.params(args)})
{
    const int mb = get_global_id(0);
    const int nb = get_global_id(1);
    const int bz = get_global_id(2);
    const int m0 = mb * ${R};
    const int n0 = nb * ${W};
${ssa.block(batch_index)}
% if a_packed:
    __global const float* ap = ${a_name} + (bz * ${Mb} + mb) * ${K * R};
% else:
% for r in range(R):
    const int am${r} = min(m0 + ${r}, ${M - 1});
% endfor
% endif
    __global const float* bp = ${b_name} + (bz * ${Nb} + nb) * ${K * W};
% for r in range(R):
% for v in range(NV):
    float16 acc${r}_${v} = (float16)(0.0f);
% endfor
% endfor
    for (int k = 0; k < ${K}; ++k) {
% for v in range(NV):
        const float16 b${v} = vload16(${v}, bp);
% endfor
% if a_packed:
% for r in range(R):
        const float a${r} = ap[${r}];
% endfor
        ap += ${R};
% else:
% for r in range(R):
${ssa.block(a_rows[r], indent='        ')}
% endfor
% endif
% for r in range(R):
% for v in range(NV):
        acc${r}_${v} += a${r} * b${v};
% endfor
% endfor
        bp += ${W};
    }
    float ct[${W}];
% for r in range(R):
    if (m0 + ${r} < ${M}) {
        const int e_m = m0 + ${r};
% for v in range(NV):
        vstore16(acc${r}_${v}, ${v}, ct);
% endfor
        for (int j = 0; j < ${W}; ++j) {
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
