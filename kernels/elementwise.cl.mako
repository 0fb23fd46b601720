## One work-item per output element; every output of the group is stored at the same index.
## params: name, numel, args [(kind, name, dtype, readonly)], index (SSA turning gid into
## the output's multi-index), body (SSA of the fused expression), stores [(buf, ssa_name)],
## bounded (default true): false where the launch has exactly numel work-items, so the
## source does not name numel and one kernel serves every length (codegen.py says when)
<%namespace name="ssa" file="_ssa.cl.mako"/>
<%page args="bounded=True, **_"/>
__kernel void ${name}(${ssa.params(args)})
{
    const int gid = get_global_id(0);
% if bounded:
    if (gid >= ${numel}) return;
% endif
${ssa.block(index)}
${ssa.block(body)}
% for buf, value in stores:
    ${buf}[gid] = ${value};
% endfor
}
