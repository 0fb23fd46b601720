"""``engine.profile()``: every kernel launched inside, with its measured device time."""
from __future__ import annotations

from . import launch
from .device import start_timing, stop_timing

__all__ = ["profile"]


class profile:
    def __init__(self):
        self._events = []
        self.kernels: list[dict] = []

    def _on_launch(self, spec, device, event):
        self._events.append((spec, device, event))

    def __enter__(self):
        launch.add_listener(self._on_launch)
        start_timing()
        return self

    def __exit__(self, *exc):
        launch.remove_listener(self._on_launch)
        stop_timing()
        for spec, device, ev in self._events:
            ev.wait()
            try:
                t = ev.profile.end - ev.profile.start
            except Exception:   # some drivers withhold profiling info on failed launches
                t = None
            self.kernels.append({"name": spec.name, "template": spec.template, "params": spec.display,
                                 "fused_ops": [n.op for n in spec.fused], "global_size": list(spec.global_size),
                                 "local_size": None if spec.local_size is None else list(spec.local_size),
                                 "time_ns": t, "device": device.name, "source": spec.source})
        self._events.clear()
        return False

    def __len__(self):
        return len(self.kernels)

    @property
    def total_ns(self) -> int:
        return sum(k["time_ns"] or 0 for k in self.kernels)

    def table(self) -> str:
        rows = [f"{'kernel':58s} {'template':12s} {'global size':>18s} {'time (us)':>10s}"]
        for k in self.kernels:
            t = "" if k["time_ns"] is None else f"{k['time_ns'] / 1e3:10.1f}"
            rows.append(f"{k['name'][:58]:58s} {k['template']:12s} {str(tuple(k['global_size'])):>18s} {t:>10s}")
        rows.append(f"{len(self.kernels)} launches, {self.total_ns / 1e6:.3f} ms of device time")
        return "\n".join(rows)
