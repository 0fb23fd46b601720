## Shared defs: how one SSA statement of a fused expression is written in OpenCL C.
## A statement is (name, op, args, dtype); args are SSA names or Python numbers.
<%!
CTYPES = {"float32": "float", "int32": "int", "int64": "long", "bool": "uchar"}

def lit(a, dtype="float32"):
    if isinstance(a, str):
        return a
    if isinstance(a, bool):
        return "1" if a else "0"
    if dtype == "float32" or isinstance(a, float):
        if a != a:
            return "NAN"
        if a in (float("inf"), float("-inf")):
            return "INFINITY" if a > 0 else "(-INFINITY)"
        return repr(float(a)) + "f"
    if dtype == "int64":
        return str(int(a)) + "L"
    return str(int(a))
%>
<%def name="stmt(s)">\
<% name, op, args, dtype = s; t = CTYPES[dtype]; a = [lit(x, dtype) for x in args] %>\
% if op == "LOAD":
const ${t} ${name} = ${args[0]}[${lit(args[1], 'int32')}];
% elif op == "IADD":
const int ${name} = ${a[0]} + ${a[1]};
% elif op == "IMUL":
const int ${name} = ${a[0]} * ${a[1]};
% elif op == "IDIV":
const int ${name} = ${a[0]} / ${a[1]};
% elif op == "IMOD":
const int ${name} = ${a[0]} % ${a[1]};
% elif op == "ICLAMP":
const int ${name} = min(max(${a[0]}, ${a[1]}), ${a[2]});
% elif op == "IINRANGE":
const int ${name} = (${a[0]} >= ${a[1]}) && (${a[0]} < ${a[2]});
% elif op == "SELECT":
const ${t} ${name} = ${a[0]} ? ${a[1]} : ${a[2]};
% elif op == "NEG":
const ${t} ${name} = -${a[0]};
% elif op == "EXP":
const ${t} ${name} = exp(${a[0]});
% elif op == "LOG":
const ${t} ${name} = log(${a[0]});
% elif op == "SQRT":
const ${t} ${name} = sqrt(${a[0]});
% elif op == "RECIP":
const ${t} ${name} = 1.0f / ${a[0]};
% elif op == "TANH":
const ${t} ${name} = tanh(${a[0]});
% elif op == "RELU":
const ${t} ${name} = ${a[0]} > 0 ? ${a[0]} : 0;
% elif op == "ERF":
const ${t} ${name} = erf(${a[0]});
% elif op == "CAST":
const ${t} ${name} = (${t})(${a[0]});
% elif op == "ADD":
const ${t} ${name} = ${a[0]} + ${a[1]};
% elif op == "MUL":
const ${t} ${name} = ${a[0]} * ${a[1]};
% elif op == "MAX":
const ${t} ${name} = ${a[0]} > ${a[1]} ? ${a[0]} : ${a[1]};
% elif op == "CMPLT":
const ${t} ${name} = ${a[0]} < ${a[1]};
% elif op == "CMPEQ":
const ${t} ${name} = ${a[0]} == ${a[1]};
% elif op == "WHERE":
## the condition is a bool whatever the result's type (a float literal there is an error on NVIDIA)
const ${t} ${name} = ${lit(args[0], 'bool')} ? ${a[1]} : ${a[2]};
% else:
<% raise ValueError("no OpenCL C for SSA op " + op) %>
% endif
</%def>
<%def name="block(stmts, indent='    ')">\
% for s in stmts:
${indent}${stmt(s).strip()}
% endfor
</%def>
<%def name="params(args)">\
${", ".join(("__global " + ("const " if ro else "") + CTYPES[dt] + "* restrict " + n) if kind == "buf" else ("const " + CTYPES[dt] + " " + n) for (kind, n, dt, ro) in args)}\
</%def>
