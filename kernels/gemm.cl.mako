## Register-blocked GEMM for CPU-like OpenCL devices (PoCL): C[b] = A[b] @ B[b] (+ epilogue).
## A work-item owns R rows x W = VW*NV columns of C as R*NV accumulators of VW floats
## (float16 where the compiler takes it; float8, float4 or plain float where the device
## probe found that it crashes or hangs on wider vectors, e.g. the PoCL 3.0 wheel on AMD
## Zen 4 aborts in LLVM on float16). B comes as panels [Nb][K][W] (b_step W) or as its own
## rows [K][N] read W columns at a time in place (b_step N), and (when a_packed) A as
## panels [Mb][K][R], so each k step is NV contiguous vector loads plus R scalars; plain
## `acc += a * b` (not fma/mad) because PoCL turns that into vector FMAs while its fma()
## and mad() builtins measured about 10x slower. Without a_packed, A is read through its
## fused index expression (implicit GEMM: a convolution's im2col window is never stored).
## params: name, M, N, K, R, VW (16, 8, 4 or 1), NV, Mb, Nb, args, a_packed, a_name, a_rows
##         (R SSA blocks defining a<r> from am<r> and k), b_name, b_base (optional: B's first float
##         of panel nb in batch bz), b_step (optional: floats between its k rows), out_name, batch_index
##         (SSA from bz), epilogue (SSA using e_acc, e_m, e_n), value, out_index (optional:
##         the output's element of C[e_m][e_n])
<%namespace name="ssa" file="_ssa.cl.mako"/>
<%
    W = VW * NV
    # packed panels unless the caller reads B's rows in place
    b_at = context.get("b_base", "(bz * %d + nb) * %d" % (Nb, K * W))
    b_row = context.get("b_step", W)
    # B read in place with N not a multiple of W: the last strip reads its columns one by one
    ragged = b_row != W and N % W != 0
    # where C[e_m][e_n] goes (optional: the transposed product's caller stores it transposed)
    c_at = "(bz * %d + e_m) * %d + e_n" % (M, N)
    out_at = context.get("out_index", c_at)
    # C stored as it is (no epilogue, C's own layout): whole strips go out as vectors; with
    # a short K the scalar epilogue loop took about as long as the products
    direct = not epilogue and value == "e_acc" and out_at == c_at
    if VW not in (1, 4, 8, 16):
        raise ValueError("gemm: vector width VW must be 16, 8, 4 or 1, got %r" % (VW,))
    vt = "float" if VW == 1 else "float%d" % VW
    # loads and stores through a vector type aligned like a float, not vload/vstore: PoCL
    # 3.0 compiles vloadN/vstoreN as out-of-line calls, and a call in the k loop spilled
    # and reloaded every accumulator each step (3-7x slower, bench/NOTES.md)
    ut = "float" if VW == 1 else "mao_float%d_u" % VW
    def bload(v, tail=False):
        src, space = ("bt", "") if tail else ("bp", "__global const ")
        return ("%s[%d]" % (src, v)) if VW == 1 else ("((%s%s*)%s)[%d]" % (space, ut, src, v))
    def vstore_global(x, v, off):
        if VW == 1:
            return "ct[%d] = %s;" % (off + v, x)
        return "*(__global %s*)(ct + %d) = %s;" % (ut, off + v * VW, x)
    def vstore_row(x, r, v):
        return ("ct[%d] = %s;" % (r * W + v, x)) if VW == 1 else ("((%s*)ct)[%d] = %s;" % (ut, r * NV + v, x))
    def vstore(x, v):
        return ("ct[%d] = %s;" % (v, x)) if VW == 1 else ("((%s*)ct)[%d] = %s;" % (ut, v, x))
%>
## min_vector_width: without it PoCL's LLVM (icelake-client prefers 256-bit vectors) split
## every float16 into two halves, so an 8 x 32 block needed 32 registers for its
## accumulators alone and spilled in the k loop
#ifndef MAO_MIN_VECTOR_WIDTH
#ifdef __clang__
#define MAO_MIN_VECTOR_WIDTH(bits) __attribute__((min_vector_width(bits)))
#else
#define MAO_MIN_VECTOR_WIDTH(bits)
#endif
#endif
% if VW > 1:
#ifndef MAO_FLOAT${VW}_U
#define MAO_FLOAT${VW}_U
typedef ${vt} ${ut} __attribute__((aligned(4)));
#endif
% endif
MAO_MIN_VECTOR_WIDTH(${32 * VW}) __kernel void ${name}(${ssa.params(args)})
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
    __global const float* bp = ${b_name} + ${b_at};
% for r in range(R):
% for v in range(NV):
    ${vt} acc${r}_${v} = (${vt})(0.0f);
% endfor
% endfor
<%def name="k_loop(tail)">\
    for (int k = 0; k < ${K}; ++k) {
% if tail:
        for (int j = 0; j < ${W}; ++j)
            bt[j] = n0 + j < ${N} ? bp[j] : 0.0f;
% endif
% for v in range(NV):
        const ${vt} b${v} = ${bload(v, tail)};
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
        bp += ${b_row};
    }
</%def>\
% if ragged:
    if (n0 + ${W} > ${N}) {      // the last strip of B's rows: its columns past N are not there
        float bt[${W}];
${k_loop(True)}\
    } else {
${k_loop(False)}\
    }
% else:
${k_loop(False)}\
% endif
% if direct:
    if (n0 + ${W} <= ${N}) {    // nothing fused and the strip inside C: whole vectors stored
        __global float* ct = ${out_name} + (bz * ${M} + m0) * ${N} + n0;
% for r in range(R):
        if (m0 + ${r} < ${M}) {
% for v in range(NV):
            ${vstore_global("acc%d_%d" % (r, v), v, r * N)}
% endfor
        }
% endfor
        return;
    }
% endif
    float ct[${R * W}];
% for r in range(R):
% for v in range(NV):
    ${vstore_row("acc%d_%d" % (r, v), r, v)}
% endfor
% endfor
    for (int r = 0; r < ${R}; ++r) {
        const int e_m = m0 + r;
        if (e_m < ${M}) {
            for (int j = 0; j < ${W}; ++j) {
                const int e_n = n0 + j;
                if (e_n < ${N}) {
                    const float e_acc = ct[r * ${W} + j];
${ssa.block(epilogue, indent='                    ')}
                    ${out_name}[${out_at}] = ${value};
                }
            }
        }
    }
}
