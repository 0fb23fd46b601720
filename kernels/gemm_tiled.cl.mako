## Local-memory tiled GEMM for GPUs: C[b] = A[b] @ B[b] (+ epilogue).
## A work-group of TX x TY work-items (TX = TN / WN, TY = TM / WM) computes a TM x TN tile
## of C; each work-item owns WM x WN outputs. KB-deep slices of the A and B panels are
## staged in local memory. The panels are contiguous along k (B: [Nb][K][TN], packed A:
## [Mb][K][TM]), so a slice is one contiguous run of KB*TM floats: the cooperative loads
## are coalesced VW-wide vector loads, and local memory is written in the same order it
## is read (no transpose, so PAD only shifts rows against bank conflicts).
## Variant knobs (engine/tune.py enumerates and validates them; the defaults are the
## first version of this kernel: 16 x 16 work-items, outputs strided by 16, scalar loads):
##   WM, WN  outputs per work-item (rows, columns)
##   LV      local read width (1, 2, 4): a work-item's outputs come in LV-wide chunks read
##           as one vector from local memory
##   BLOCK   1: a work-item's chunks are contiguous (ty*WM + i); 0: chunks are interleaved
##           across work-items (chunk c of work-item t at c*T*LV + t*LV), so a warp's
##           vector reads hit consecutive banks
##   VW      global load width (1, 2, 4) of the panels (A only when packed)
##   PAD     floats added to each local row
##   DBUF    1: two local buffers and the next slice prefetched into registers while this
##           one is computed (one barrier per slice); 0: one buffer, two barriers
##   MAD     1: accumulate with mad() (one FMA on GPUs; about 10x slower on PoCL CPUs);
##           0: plain acc += a * b
## Fixed work-group size, compile-time shapes and no dynamic local memory: FPGA offline
## compilers need all three to size the hardware they generate, and GPU compilers unroll
## and allocate registers better with them.
## params: name, M, N, K, TM, TN, KB, Mb, Nb, args, a_packed, a_name, a_load (SSA defining
##         a_val from am and ak, used when not a_packed), b_name, out_name, batch_index,
##         epilogue (SSA using e_acc, e_m, e_n), value; optional: the variant knobs above
<%namespace name="ssa" file="_ssa.cl.mako"/>
<%
    WM = context.get("WM", TM // 16); WN = context.get("WN", TN // 16)
    LV = context.get("LV", 1); BLOCK = context.get("BLOCK", 0); VW = context.get("VW", 1)
    PAD = context.get("PAD", 0); DBUF = context.get("DBUF", 0); MAD = context.get("MAD", 0)
    problems = []
    if WM < 1 or WN < 1 or TM % WM or TN % WN:
        problems.append("WM, WN must divide TM, TN")
    if LV not in (1, 2, 4) or WM % LV or WN % LV:
        problems.append("LV must be 1, 2 or 4 and divide WM and WN")
    if VW not in (1, 2, 4) or TM % VW or TN % VW or PAD % VW or PAD % LV:
        problems.append("VW must be 1, 2 or 4 and divide TM, TN and PAD (PAD a multiple of LV too)")
    TX = TN // max(WN, 1); TY = TM // max(WM, 1); NT = TX * TY
    if not 1 <= NT <= 1024:
        problems.append("TX * TY work-items must be 1..1024")
    if problems:
        raise ValueError("gemm_tiled variant TM=%d TN=%d WM=%s WN=%s LV=%s VW=%s PAD=%s: %s"
                         % (TM, TN, WM, WN, LV, VW, PAD, "; ".join(problems)))
    VWA = VW if a_packed else 1
    NK = -(-K // KB)
    TMP = TM + PAD; TNP = TN + PAD
    KTAIL = K % KB != 0
    NB = 2 if DBUF else 1
    def vt(w):
        return "float" if w == 1 else "float%d" % w
    def comp(name, w, r):
        return name if w == 1 else "%s.s%d" % (name, r)
    def rowof(i, t, T, W):
        # position of a work-item's i-th output along a tile side (t: its index, T: how many)
        c, r = divmod(i, LV)
        return ("%s * %d + %d" % (t, W, i)) if BLOCK else ("%s * %d + %d" % (t, LV, c * T * LV + r))
    # cooperative loads: n vectors per slice, per work-item ceil(n / NT), guarded when ragged
    nA = KB * TM // VWA; nB = KB * TN // VW
    cA = -(-nA // NT); cB = -(-nB // NT)
    FMA = (lambda a, b, c: "%s = mad(%s, %s, %s);" % (c, a, b, c)) if MAD else (lambda a, b, c: "%s += %s * %s;" % (c, a, b))
%>
<%def name="load_slice(k0)">\
% for c in range(cA):
    {
        const int v = lid + ${c * NT};
        const int row = v * ${VWA} / ${TM};
% if nA % NT:
        if (v < ${nA}) {
% else:
        {
% endif
% if a_packed:
% if KTAIL:
            ra${c} = ${k0} + row < ${K} ? ((__global const ${vt(VWA)}*)(ap + ${k0} * ${TM}))[v] : (${vt(VWA)})(0.0f);
% else:
            ra${c} = ((__global const ${vt(VWA)}*)(ap + ${k0} * ${TM}))[v];
% endif
% else:
            const int am = min(mb * ${TM} + v % ${TM}, ${M - 1});
            const int ak = min(${k0} + row, ${K - 1});
${ssa.block(a_load, indent='            ')}
            ra${c} = ${k0} + row < ${K} ? a_val : 0.0f;
% endif
        }
    }
% endfor
% for c in range(cB):
    {
        const int v = lid + ${c * NT};
        const int row = v * ${VW} / ${TN};
% if nB % NT:
        if (v < ${nB}) {
% else:
        {
% endif
% if KTAIL:
            rb${c} = ${k0} + row < ${K} ? ((__global const ${vt(VW)}*)(bp + ${k0} * ${TN}))[v] : (${vt(VW)})(0.0f);
% else:
            rb${c} = ((__global const ${vt(VW)}*)(bp + ${k0} * ${TN}))[v];
% endif
        }
    }
% endfor
</%def>
<%def name="store_slice(buf)">\
% for c in range(cA):
    {
        const int v = lid + ${c * NT};
% if nA % NT:
        if (v < ${nA})
% endif
        *((__local ${vt(VWA)}*)&As[${buf}][v * ${VWA} / ${TM}][v * ${VWA} % ${TM}]) = ra${c};
    }
% endfor
% for c in range(cB):
    {
        const int v = lid + ${c * NT};
% if nB % NT:
        if (v < ${nB})
% endif
        *((__local ${vt(VW)}*)&Bs[${buf}][v * ${VW} / ${TN}][v * ${VW} % ${TN}]) = rb${c};
    }
% endfor
</%def>
<%def name="compute(buf)">\
% if KB > 1:
    #pragma unroll
% endif
    for (int kk = 0; kk < ${KB}; ++kk) {
% for c in range(WM // LV):
        const ${vt(LV)} av${c} = *((__local const ${vt(LV)}*)&As[${buf}][kk][${rowof(c * LV, "ty", TY, WM)}]);
% endfor
% for c in range(WN // LV):
        const ${vt(LV)} bv${c} = *((__local const ${vt(LV)}*)&Bs[${buf}][kk][${rowof(c * LV, "tx", TX, WN)}]);
% endfor
% for i in range(WM):
% for j in range(WN):
        ${FMA(comp("av%d" % (i // LV), LV, i % LV), comp("bv%d" % (j // LV), LV, j % LV), "acc%d_%d" % (i, j))}
% endfor
% endfor
    }
</%def>
__kernel __attribute__((reqd_work_group_size(${TX}, ${TY}, 1)))
void ${name}(${ssa.params(args)})
{
    const int tx = get_local_id(0);
    const int ty = get_local_id(1);
    const int lid = ty * ${TX} + tx;
    const int nb = get_group_id(0);
    // a launch may cover only some row tiles (engine.codegen.split_rows): its global
    // offset along dim 1 says which come first
    const int mb = get_group_id(1) + (int)(get_global_offset(1) / ${TY});
    const int bz = get_global_id(2);
${ssa.block(batch_index)}
    __local float As[${NB}][${KB}][${TMP}] __attribute__((aligned(16)));
    __local float Bs[${NB}][${KB}][${TNP}] __attribute__((aligned(16)));
% if a_packed:
    __global const float* ap = ${a_name} + (bz * ${Mb} + mb) * ${K * TM};
% endif
    __global const float* bp = ${b_name} + (bz * ${Nb} + nb) * ${K * TN};
% for c in range(cA):
    ${vt(VWA)} ra${c} = (${vt(VWA)})(0.0f);
% endfor
% for c in range(cB):
    ${vt(VW)} rb${c} = (${vt(VW)})(0.0f);
% endfor
% for i in range(WM):
    float ${", ".join("acc%d_%d = 0.0f" % (i, j) for j in range(WN))};
% endfor
% if DBUF:
${load_slice("0")}
${store_slice("0")}
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int t = 0; t < ${NK}; ++t) {
        const int cur = t & 1;
        if (t + 1 < ${NK}) {
            const int k0 = (t + 1) * ${KB};
${load_slice("k0")}
        }
${compute("cur")}
        if (t + 1 < ${NK}) {
${store_slice("cur ^ 1")}
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
% else:
    for (int k0 = 0; k0 < ${K}; k0 += ${KB}) {
${load_slice("k0")}
${store_slice("0")}
        barrier(CLK_LOCAL_MEM_FENCE);
${compute("0")}
        barrier(CLK_LOCAL_MEM_FENCE);
    }
% endif
% for i in range(WM):
    {
        const int e_m = mb * ${TM} + ${rowof(i, "ty", TY, WM)};
        if (e_m < ${M}) {
% for j in range(WN):
            {
                const int e_n = nb * ${TN} + ${rowof(j, "tx", TX, WN)};
                if (e_n < ${N}) {
                    const float e_acc = acc${i}_${j};
${ssa.block(epilogue, indent='                    ')}
                    ${out_name}[(bz * ${M} + e_m) * ${N} + e_n] = ${value};
                }
            }
% endfor
        }
    }
% endfor
}
