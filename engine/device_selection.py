"""Which device: every OpenCL device found, ENGINE_DEVICE and ``device=`` selectors (an
index, an alias or any part of the device's line), and the default device."""
from __future__ import annotations

import os

import pyopencl as cl

from .device import DEVICE_ALIASES, Device

__all__ = ["DeviceNotFound", "devices", "default_device", "set_default_device", "get_device"]


class DeviceNotFound(LookupError):
    pass


_devices: list[Device] | None = None
_default: Device | None = None


def devices() -> list[Device]:
    """Every OpenCL device of every platform, in a stable order."""
    global _devices
    if _devices is None:
        found = []
        try:
            platforms = cl.get_platforms()
        except cl.Error:
            platforms = []
        for p in platforms:
            try:
                found.extend(p.get_devices())
            except cl.Error:
                continue
        _devices = [Device(d, i) for i, d in enumerate(found)]
    return _devices


def _device_lines(devs) -> str:
    return "\n".join(f"  [{d.index}] {d.platform} / {d.name}  kind={d.kind}  driver={d.driver}  vendor={d.vendor}"
                     f"  (aliases: {', '.join(d.aliases())})" for d in devs)


def _pick(selector: str, source: str = "ENGINE_DEVICE") -> Device:
    """The device ``selector`` names: an index, an alias (pocl, nvidia, amd, intel, oclgrind,
    cpu, gpu) or, case-insensitively, any part of the device's line in ``engine devices``
    (platform, name, vendor, driver; several words must all appear). The first match wins.
    ``source`` says where the selector came from (the variable, or a device argument)."""
    devs = devices()
    if not devs:
        raise DeviceNotFound("no OpenCL device found: install pocl-binary-distribution or a GPU driver's OpenCL ICD")
    sel = str(selector).strip().lower()
    what = f"{source}={selector!r}" if source == "ENGINE_DEVICE" else f"{source} {selector!r}"
    choose = (f"Set ENGINE_DEVICE (or pass device=) to a device's index, one of the aliases "
              f"{', '.join(DEVICE_ALIASES)}, or any part of its line (case-insensitive); `engine devices` lists them.")
    if sel.isdigit():
        i = int(sel)
        if i >= len(devs):
            raise DeviceNotFound(f"{what}: device index {i} out of range; {len(devs)} found:\n{_device_lines(devs)}\n{choose}")
        return devs[i]
    if sel:
        for d in devs:
            if sel in d.aliases():
                return d
        for d in devs:
            text = d.selector_text()
            if sel in text or all(w in text for w in sel.split()):
                return d
    raise DeviceNotFound(f"{what} matches no OpenCL device; found:\n{_device_lines(devs)}\n{choose}")


def default_device() -> Device:
    """ENGINE_DEVICE (see _pick), else a GPU, else the PoCL CPU, else the first."""
    global _default
    if _default is None:
        sel = os.environ.get("ENGINE_DEVICE")
        if sel:
            _default = _pick(sel)
        else:
            devs = devices()
            if not devs:
                _pick("")
            _default = (next((d for d in devs if d.kind == "gpu"), None)
                        or next((d for d in devs if d.is_pocl), None) or devs[0])
    return _default


def set_default_device(device) -> Device:
    global _default
    _default = device if isinstance(device, Device) else _pick(str(device), "device")
    return _default


def get_device(device) -> Device:
    if device is None:
        return default_device()
    if isinstance(device, Device):
        return device
    return _pick(str(device), "device")
