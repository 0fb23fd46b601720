"""Offline compilation support: every kernel of a compiled step as one ``.cl`` file plus a
JSON manifest (kernel names, argument order and types, launch sizes), and loading a
precompiled program binary back in place of the source, which is how FPGA toolchains
(offline compilers) are used; kernels are plain OpenCL C with compile-time shapes so such
compilers can take them.

A program binary is opaque machine code that the driver runs without further checks, so a
bundle only loads one that its manifest records (``add_binary``): the binary's SHA-256
and size, the SHA-256 of the kernels.cl it was built from, the build options and the
device (platform, name, driver) it was built for. Anything else (a binary of other
source, a truncated one, one for another device or driver) is refused with BundleError
before the driver sees it.
"""
from __future__ import annotations

import hashlib
import json
import os

from .files import atomic_write

__all__ = ["export_bundle", "load_bundle", "add_binary", "BundleError", "BUNDLE_FORMAT"]


class BundleError(ValueError):
    """A kernel bundle (or a program binary offered for it) does not match its manifest."""

BUNDLE_FORMAT = "many-as-one/kernel-bundle"
_MARK = "// ---- kernel "


def export_bundle(step, directory) -> dict:
    """Write ``kernels.cl`` and ``manifest.json`` for a traced CompiledStep."""
    if not step.items:
        raise ValueError("export_bundle: call the compiled step once first (it is traced on its first call)")
    os.makedirs(directory, exist_ok=True)
    kernels, sources, launches = {}, [], []
    for launch in step.launches:
        # the kernel as built for this device (a narrower GEMM variant where its compiler
        # needed one), else as planned (a kernel that itself came from a loaded bundle)
        spec = launch.ck.spec if launch.ck.spec.template != "bundle" else launch.spec
        if spec.name not in kernels:
            kernels[spec.name] = {
                "name": spec.name, "template": spec.template, "params": spec.display,
                "args": [_arg(a) for a in spec.args],
                "global_size": list(spec.global_size),
                "local_size": None if spec.local_size is None else list(spec.local_size),
                "source_sha256": hashlib.sha256(spec.source.encode()).hexdigest()}
            sources.append(f"{_MARK}{spec.name} ----\n{spec.source}\n")
        launches.append({"kernel": spec.name, "global_size": list(launch.gsize),
                         "local_size": None if launch.lsize is None else list(launch.lsize)})
    dev = step.device
    text = "".join(sources)
    manifest = {"format": BUNDLE_FORMAT, "v": 1, "device": _device_of(dev),
                "source_sha256": _sha(text.encode()), "options": "",
                "kernels": list(kernels.values()), "launches": launches, "binaries": []}
    with open(os.path.join(directory, "kernels.cl"), "w") as f:
        f.write(text)
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


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _device_of(dev) -> dict:
    return {"platform": dev.platform, "name": dev.name, "driver": dev.driver}


def _read(directory):
    """(manifest, kernels.cl text, name -> source), checked against each other."""
    try:
        with open(os.path.join(directory, "manifest.json")) as f:
            manifest = json.load(f)
        with open(os.path.join(directory, "kernels.cl")) as f:
            text = f.read()
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{directory}: not a readable kernel bundle ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{directory}: not a kernel bundle (manifest.json has no format {BUNDLE_FORMAT!r})")
    if "source_sha256" in manifest and manifest["source_sha256"] != _sha(text.encode()):
        raise BundleError(f"{directory}: kernels.cl does not match manifest.json (SHA-256 differs)")
    sources = split_sources(text)
    for k in manifest.get("kernels", []):
        if _sha(sources.get(k["name"], "").encode()) != k["source_sha256"]:
            raise BundleError(f"{directory}: kernels.cl does not match the manifest for {k['name']}")
    return manifest, text, sources


def add_binary(directory, binary: bytes, device, options: str = "", filename: str | None = None) -> str:
    """Record ``binary`` (a program binary of this bundle's whole kernels.cl built for
    ``device`` with ``options``, e.g. by an offline compiler) in the manifest, stored
    beside it; load_bundle then accepts it for that device. Returns the file's path."""
    manifest, text, _ = _read(directory)
    filename = filename or f"kernels-{_sha(binary)[:12]}.bin"
    if os.path.basename(filename) != filename:
        raise BundleError(f"binary file name {filename!r} must be a plain name inside the bundle")
    path = os.path.join(directory, filename)
    with open(path, "wb") as f:
        f.write(binary)
    entry = {"file": filename, "sha256": _sha(binary), "size": len(binary), "source_sha256": _sha(text.encode()),
             "options": options, "device": _device_of(device)}
    manifest["binaries"] = [b for b in manifest.get("binaries", []) if b.get("file") != filename] + [entry]
    atomic_write(os.path.join(directory, "manifest.json"), json.dumps(manifest, indent=1, default=str))
    return path


def _check_binary(directory, manifest, text, binary, device, options):
    """The manifest's record of ``binary``, or BundleError saying why it is refused."""
    digest = _sha(binary)
    records = [b for b in manifest.get("binaries", []) if isinstance(b, dict) and b.get("sha256") == digest]
    if not records:
        raise BundleError(
            f"{directory}: refusing a program binary of {len(binary)} bytes (SHA-256 {digest[:16]}...) that "
            f"manifest.json does not record: it may be truncated, built from other source, or not from this "
            f"bundle at all. Record a binary you trust with engine.bundle.add_binary(directory, binary, device).")
    want = {"source_sha256": _sha(text.encode()), "options": options, "device": _device_of(device), "size": len(binary)}
    for rec in records:
        bad = [k for k, v in want.items() if rec.get(k) != v]
        if not bad:
            return rec
    raise BundleError(f"{directory}: the program binary {records[0].get('file')} was recorded for "
                      f"{records[0].get('device')} (options {records[0].get('options')!r}) from kernels.cl "
                      f"{str(records[0].get('source_sha256'))[:16]}...; it does not match this "
                      f"{', '.join(bad)} ({_device_of(device)}); refused")


def load_bundle(device, directory, binary: bytes | None = None, options: str = "") -> int:
    """Make the bundle's kernels available to ``device`` without compiling them one by one:
    from ``binary`` (a program binary of the whole kernels.cl, e.g. made by an offline
    compiler), else from a binary the manifest records for this device, else from
    kernels.cl. A binary must be recorded in the manifest for this source, options and
    device (see add_binary), else BundleError. Returns how many kernels were registered."""
    manifest, text, sources = _read(directory)
    if binary is None:
        mine = [b for b in manifest.get("binaries", []) if isinstance(b, dict)
                and b.get("device") == _device_of(device) and b.get("options") == options]
        if mine:
            try:
                with open(os.path.join(directory, os.path.basename(mine[-1]["file"])), "rb") as f:
                    binary = f.read()
            except OSError as exc:
                raise BundleError(f"{directory}: recorded binary {mine[-1]['file']} is unreadable ({exc})") from exc
    if binary is not None:
        _check_binary(directory, manifest, text, binary, device, options)
    return device.register_program(sources, text, binary, options, _launches(manifest))


_SCALARS = {"float32": "f32", "int32": "i32", "int64": "i64", "bool": "u8"}
_ITEMSIZE = {"float32": 4, "int32": 4, "int64": 8, "bool": 1}


def _launches(manifest) -> list:
    """One launch of each kernel with zero buffers of its sizes, from the manifest: what the
    runtime's build child runs once on drivers that compile at first launch (PoCL), so a
    compiler that crashes on the bundle's source takes down the child, not this process."""
    out = []
    for k in manifest.get("kernels", []):
        args = []
        for a in k.get("args", []):
            if a.get("type") == "uint":
                args.append(["u32", 0])
            elif a.get("type") == "scalar":
                args.append([_SCALARS.get(a.get("dtype"), "f32"), 0])
            else:
                n = 1
                for s in a.get("shape", []):
                    n *= int(s)
                args.append(["buf", n * _ITEMSIZE.get(a.get("dtype"), 4), None])
        out.append({"name": k["name"], "global": list(k["global_size"]), "local": k.get("local_size"),
                    "args": args, "read": []})
    return out
