## Local-memory tiled GEMM for GPUs: C[b] = A[b] @ B[b] (+ epilogue).
## A work-group of 16 x 16 work-items computes a TM x TN tile of C (each work-item
## TM/16 x TN/16 outputs), staging KB-deep slices of the A and B panels in local memory.
## The panels are contiguous along k (B: [Nb][K][TN], packed A: [Mb][K][TM]), so the
## cooperative loads are fully coalesced. Fixed work-group size, compile-time shapes and
## no dynamic local memory: FPGA offline compilers need all three to size the hardware
## they generate, and GPU compilers unroll and allocate registers better with them.
## params: name, M, N, K, TM, TN, KB, Mb, Nb, args, a_packed, a_name, a_load (SSA defining
##         a_val from am and ak, used when not a_packed), b_name, out_name, batch_index,
##         epilogue (SSA using e_acc, e_m, e_n), value
<%namespace name="ssa" file="_ssa.cl.mako"/>
<% WM = TM // 16; WN = TN // 16 %>
__kernel __attribute__((reqd_work_group_size(16, 16, 1)))
void ${name}(${ssa.params(args)})
{
    const int tx = get_local_id(0);
    const int ty = get_local_id(1);
    const int lid = ty * 16 + tx;
    const int nb = get_group_id(0);
    const int mb = get_group_id(1);
    const int bz = get_global_id(2);
${ssa.block(batch_index)}
    __local float As[${KB}][${TM}];
    __local float Bs[${KB}][${TN}];
% if a_packed:
    __global const float* ap = ${a_name} + (bz * ${Mb} + mb) * ${K * TM};
% endif
    __global const float* bp = ${b_name} + (bz * ${Nb} + nb) * ${K * TN};
    float acc[${WM}][${WN}];
    for (int i = 0; i < ${WM}; ++i)
        for (int j = 0; j < ${WN}; ++j)
            acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < ${K}; k0 += ${KB}) {
        for (int e = lid; e < ${KB * TM}; e += 256) {
            const int ak = k0 + e / ${TM};
% if a_packed:
            As[e / ${TM}][e % ${TM}] = ak < ${K} ? ap[k0 * ${TM} + e] : 0.0f;
% else:
            const int am = min(mb * ${TM} + e % ${TM}, ${M - 1});
            const int akc = min(ak, ${K - 1});
            {
                const int ak = akc;
${ssa.block(a_load, indent='                ')}
                As[e / ${TM}][e % ${TM}] = k0 + e / ${TM} < ${K} ? a_val : 0.0f;
            }
% endif
        }
        for (int e = lid; e < ${KB * TN}; e += 256) {
            const int bk = k0 + e / ${TN};
            Bs[e / ${TN}][e % ${TN}] = bk < ${K} ? bp[k0 * ${TN} + e] : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < ${KB}; ++kk) {
            float a[${WM}], b[${WN}];
            for (int i = 0; i < ${WM}; ++i) a[i] = As[kk][ty + 16 * i];
            for (int j = 0; j < ${WN}; ++j) b[j] = Bs[kk][tx + 16 * j];
            for (int i = 0; i < ${WM}; ++i)
                for (int j = 0; j < ${WN}; ++j)
                    acc[i][j] += a[i] * b[j];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int i = 0; i < ${WM}; ++i) {
        const int e_m = mb * ${TM} + ty + 16 * i;
        if (e_m >= ${M}) continue;
        for (int j = 0; j < ${WN}; ++j) {
            const int e_n = nb * ${TN} + tx + 16 * j;
            if (e_n < ${N}) {
                const float e_acc = acc[i][j];
${ssa.block(epilogue, indent='                ')}
                ${out_name}[(bz * ${M} + e_m) * ${N} + e_n] = ${value};
            }
        }
    }
}
