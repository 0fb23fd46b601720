## One work-item per output element; it walks the reduced axes in a flat loop and folds
## the fused input expression into its accumulators, then applies the fused epilogue.
## UNROLL consecutive reduced elements go to UNROLL separate accumulators, combined at the
## end: one accumulator is a chain of dependent adds (no compiler may reorder float adds),
## which bounds a CPU work-item at one element per add latency; separate ones overlap.
## params: name, numel, args, index (gid -> output multi-index), loop_extent, loop_index
## (SSA turning `r` into the reduced multi-index), body (SSA of the input value at those
## indices), value (SSA name of the input), combine ("SUM"|"MAX"), acc_name, epilogue
## (SSA using acc_name), stores [(buf, ssa_name)]; optional: UNROLL (default 1)
<%namespace name="ssa" file="_ssa.cl.mako"/>
<%
    U = context.get("UNROLL", 1) if loop_extent >= context.get("UNROLL", 1) else 1
    init = "0.0f" if combine == "SUM" else "-INFINITY"
%>
<%def name="fold(a, b)">${f"{a} + {b}" if combine == "SUM" else f"({b} > {a} ? {b} : {a})"}</%def>
<%def name="step(acc)">\
${ssa.block(loop_index, indent='            ')}\
${ssa.block(body, indent='            ')}\
            ${acc} = ${fold(acc, value)};
</%def>
__kernel void ${name}(${ssa.params(args)})
{
    const int gid = get_global_id(0);
    if (gid >= ${numel}) return;
${ssa.block(index)}
% for u in range(U):
    float acc${u} = ${init};
% endfor
    int r0 = 0;
% if U > 1:
    for (; r0 < ${loop_extent - loop_extent % U}; r0 += ${U}) {
% for u in range(U):
        {
            const int r = r0 + ${u};
${step(f"acc{u}")}\
        }
% endfor
    }
% endif
    for (; r0 < ${loop_extent}; ++r0) {
        const int r = r0;
${step("acc0")}\
    }
% for u in range(1, U):
    acc0 = ${fold("acc0", f"acc{u}")};
% endfor
    const float ${acc_name} = acc0;
${ssa.block(epilogue)}
% for buf, v in stores:
    ${buf}[gid] = ${v};
% endfor
}
