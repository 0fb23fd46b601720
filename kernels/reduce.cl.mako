## One work-item per output element; it walks the reduced axes in a flat loop and folds
## the fused input expression into one accumulator, then applies the fused epilogue.
## params: name, numel, args, index (gid -> output multi-index), loop_extent, loop_index
## (SSA turning `r` into the reduced multi-index), body (SSA of the input value at those
## indices), value (SSA name of the input), combine ("SUM"|"MAX"), acc_name, epilogue
## (SSA using acc_name), stores [(buf, ssa_name)]
<%namespace name="ssa" file="_ssa.cl.mako"/>
__kernel void ${name}(${ssa.params(args)})
{
    const int gid = get_global_id(0);
    if (gid >= ${numel}) return;
${ssa.block(index)}
    float acc = ${"0.0f" if combine == "SUM" else "-INFINITY"};
    for (int r = 0; r < ${loop_extent}; ++r) {
${ssa.block(loop_index, indent='        ')}
${ssa.block(body, indent='        ')}
% if combine == "SUM":
        acc += ${value};
% else:
        acc = ${value} > acc ? ${value} : acc;
% endif
    }
    const float ${acc_name} = acc;
${ssa.block(epilogue)}
% for buf, v in stores:
    ${buf}[gid] = ${v};
% endfor
}
