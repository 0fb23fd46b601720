## A work-group of L work-items per output element (GPUs, long innermost axes): work-item
## `lid` folds reduced elements lid, lid + L, lid + 2L, ... so neighbouring work-items read
## neighbouring addresses (coalesced), UNROLL of them per pass so several loads are in
## flight; then a local-memory tree combines the L partial results and work-item 0 applies
## the fused epilogue. Fixed work-group size and compile-time shapes, as every template.
## The SSA blocks are the same as kernels/reduce.cl.mako's: the output index comes from
## `gid` (here the work-group's number), the reduced index from `r` (< loop_extent).
## params: name, numel, L (a power of two), UNROLL, args, index, loop_extent, loop_index,
## body, value, combine ("SUM"|"MAX"), acc_name, epilogue, stores [(buf, ssa_name)]
<%namespace name="ssa" file="_ssa.cl.mako"/>
## MAX as the plain template writes it (a NaN input is skipped the same way)
<%def name="fold(a, b)">${f"{a} + {b}" if combine == "SUM" else f"({b} > {a} ? {b} : {a})"}</%def>
<%def name="step()">\
${ssa.block(loop_index, indent='            ')}\
${ssa.block(body, indent='            ')}\
            acc = ${fold("acc", value)};
</%def>
__kernel __attribute__((reqd_work_group_size(${L}, 1, 1)))
void ${name}(${ssa.params(args)})
{
    const int gid = get_group_id(0);
    const int lid = get_local_id(0);
    __local float part[${L}];
${ssa.block(index)}
    float acc = ${"0.0f" if combine == "SUM" else "-INFINITY"};
    int r0 = lid;
% if UNROLL > 1 and loop_extent >= L * UNROLL:
    for (; r0 + ${(UNROLL - 1) * L} < ${loop_extent}; r0 += ${UNROLL * L}) {
% for u in range(UNROLL):
        {
            const int r = r0 + ${u * L};
${step()}\
        }
% endfor
    }
% endif
    for (; r0 < ${loop_extent}; r0 += ${L}) {
        {
            const int r = r0;
${step()}\
        }
    }
    part[lid] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
% for s in [L >> k for k in range(1, L.bit_length()) ]:
    if (lid < ${s})
        part[lid] = ${fold("part[lid]", f"part[lid + {s}]")};
    barrier(CLK_LOCAL_MEM_FENCE);
% endfor
    if (lid == 0) {
        const float ${acc_name} = part[0];
${ssa.block(epilogue, indent='        ')}
% for buf, v in stores:
        ${buf}[gid] = ${v};
% endfor
    }
}
