## PoCL only: the declarations of the OpenCL builtins the other templates call, put before a
## program built with -D_OPENCL_H_ (engine/build_child.py, `lean`). That macro is the include
## guard of Clang's opencl-c.h (980 KB), which PoCL otherwise parses on every clBuildProgram
## (~0.1 CPU-s each); its base header (types, macros such as NAN, CLK_LOCAL_MEM_FENCE) Clang
## still includes by default. Each function is declared with opencl-c.h's full overload set and
## attributes, so calls resolve and mangle (and link to PoCL's library) exactly as with the
## whole header. A source calling a builtin not declared here does not build lean (OpenCL C
## has no implicit declarations) and is built with the whole header again, slower; for the
## templates tests/test_lean_build.py fails then: add the builtin here, with all its overloads.
<%
    W = ("", "2", "3", "4", "8", "16")
    INTS = ("char", "uchar", "short", "ushort", "int", "uint", "long", "ulong")
    FLOATS = (("float", None), ("double", "cl_khr_fp64"), ("half", "cl_khr_fp16"))
%>\
#define __mao_f __attribute__((overloadable, const))
% for f in ("get_global_id", "get_local_id", "get_group_id", "get_global_size", "get_global_offset"):
size_t __mao_f ${f}(uint);
% endfor
void __attribute__((overloadable, convergent)) barrier(cl_mem_fence_flags);
% for t in INTS:
% for w in W:
${t}${w} __mao_f min(${t}${w}, ${t}${w}); ${t}${w} __mao_f max(${t}${w}, ${t}${w});
% if w:
${t}${w} __mao_f min(${t}${w}, ${t}); ${t}${w} __mao_f max(${t}${w}, ${t});
% endif
% endfor
% endfor
% for t, ext in FLOATS:
% if ext:
#ifdef ${ext}
#pragma OPENCL EXTENSION ${ext} : enable
% endif
% for w in W:
% for f in ("exp", "log", "sqrt", "tanh", "erf"):
${t}${w} __mao_f ${f}(${t}${w});
% endfor
${t}${w} __mao_f mad(${t}${w}, ${t}${w}, ${t}${w});
${t}${w} __mao_f min(${t}${w}, ${t}${w}); ${t}${w} __mao_f max(${t}${w}, ${t}${w});
% if w:
${t}${w} __mao_f min(${t}${w}, ${t}); ${t}${w} __mao_f max(${t}${w}, ${t});
% endif
% endfor
% if ext:
#pragma OPENCL EXTENSION ${ext} : disable
#endif
% endif
% endfor
## atomics are not const: overloadable only, as the header's __ovld (defined by the header)
#define __mao_o __attribute__((overloadable))
% for t in ("int", "uint"):
${t} __mao_o atomic_add(volatile __global ${t} *p, ${t} val);
${t} __mao_o atomic_add(volatile __local ${t} *p, ${t} val);
% endfor
#ifdef __OPENCL_CPP_VERSION__
int __mao_o atomic_add(volatile int *p, int val);
uint __mao_o atomic_add(volatile uint *p, uint val);
#endif
#undef __mao_o
#undef __mao_f
#line 1
