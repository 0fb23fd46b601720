"""Offline compilation support (DESIGN.md, portability rules): every kernel of a compiled
step as one ``.cl`` file plus a JSON manifest (kernel names, argument order and types,
launch sizes), and loading a precompiled program binary back in place of the source, which
is how FPGA toolchains (offline compilers) are used.
"""
from __future__ import annotations

import hashlib
import json
import os

__all__ = ["export_bundle", "load_bundle", "BUNDLE_FORMAT"]

BUNDLE_FORMAT = "many-as-one/kernel-bundle"
_MARK = "// ---- kernel "


def export_bundle(step, directory) -> dict:
    """Write ``kernels.cl`` and ``manifest.json`` for a traced CompiledStep."""
    if not step.items:
        raise ValueError("export_bundle: call the compiled step once first (it is traced on its first call)")
    os.makedirs(directory, exist_ok=True)
    kernels, sources, launches = {}, [], []
    for launch in step.launches:
        spec = launch.ck.spec
        if spec.name not in kernels:
            kernels[spec.name] = {
                "name": spec.name, "template": spec.template, "params": spec.params,
                "args": [_arg(a) for a in spec.args],
                "global_size": list(spec.global_size),
                "local_size": None if spec.local_size is None else list(spec.local_size),
                "source_sha256": hashlib.sha256(spec.source.encode()).hexdigest()}
            sources.append(f"{_MARK}{spec.name} ----\n{spec.source}\n")
        launches.append({"kernel": spec.name, "global_size": list(launch.gsize),
                         "local_size": None if launch.lsize is None else list(launch.lsize)})
    dev = step.device
    manifest = {"format": BUNDLE_FORMAT, "v": 1, "device": {"platform": dev.platform, "name": dev.name,
                                                             "driver": dev.driver},
                "kernels": list(kernels.values()), "launches": launches}
    with open(os.path.join(directory, "kernels.cl"), "w") as f:
        f.write("".join(sources))
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, default=str)
    return manifest


def _arg(a):
    role = a[0]
    if role in ("seed", "offset"):
        return {"role": role, "type": "uint"}
    n = a[1]
    kind = "scalar" if role == "var" else "buffer"
    return {"role": role, "type": kind, "dtype": n.dtype, "shape": list(n.shape)}


def split_sources(text: str) -> dict:
    """name -> source of each kernel in a bundle's kernels.cl."""
    out = {}
    for chunk in text.split(_MARK)[1:]:
        head, _, body = chunk.partition("\n")
        out[head.split(" ----")[0]] = body[:-1] if body.endswith("\n") else body
    return out


def load_bundle(device, directory, binary: bytes | None = None) -> int:
    """Make the bundle's kernels available to ``device`` without compiling them from
    source: from ``binary`` (a program binary of the whole kernels.cl, e.g. made by an
    offline compiler) or else from kernels.cl. Returns how many kernels were registered."""
    with open(os.path.join(directory, "manifest.json")) as f:
        manifest = json.load(f)
    if manifest.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{directory}: not a kernel bundle")
    with open(os.path.join(directory, "kernels.cl")) as f:
        text = f.read()
    sources = split_sources(text)
    for k in manifest["kernels"]:
        if hashlib.sha256(sources.get(k["name"], "").encode()).hexdigest() != k["source_sha256"]:
            raise ValueError(f"{directory}: kernels.cl does not match the manifest for {k['name']}")
    return device.register_program(sources, text, binary)
