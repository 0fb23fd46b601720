## One work-item per output element; every output of the group is stored at the same index.
## params: name, numel, args [(kind, name, dtype, readonly)], index (SSA turning gid into
## the output's multi-index), body (SSA of the fused expression), stores [(buf, ssa_name)]
<%namespace name="ssa" file="_ssa.cl.mako"/>
__kernel void ${name}(${ssa.params(args)})
{
    const int gid = get_global_id(0);
    if (gid >= ${numel}) return;
${ssa.block(index)}
${ssa.block(body)}
% for buf, value in stores:
    ${buf}[gid] = ${value};
% endfor
}
