"""The ``engine`` command: devices, train, kernels, tune, data, onnx, and the commands other
installed packages add.

engine/ imports nothing from cluster/ or ui/. Those packages add to this command line
through entry points of the group ``many_as_one.commands`` (setup.cfg): an entry point
is named after the command it adds or extends and loads to ``register(commands)``, which
receives the `Commands` below. ``engine ui`` comes from ui/commands.py and ``engine train
--nodes`` from cluster/commands.py. Where a package is not installed, or its entry point
fails to load (said on stderr), its commands are absent and the rest keep working.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from importlib.metadata import entry_points

__all__ = ["main", "Commands", "COMMANDS_GROUP", "recorded", "announce", "print_results", "recording_hooks"]

COMMANDS_GROUP = "many_as_one.commands"


class Commands:
    """The ``engine`` command line as an extension sees it:

    - ``add(name, main, help)``: a command that parses its own arguments; ``engine NAME
      ARGS...`` returns ``main(ARGS)``.
    - ``parser(name)``: the argparse parser of one of the engine's commands, to add options.
    - ``handle(name, when, run)``: ``run(args)`` serves the command instead of its own
      handler whenever ``when(args)`` is true.
    """

    def __init__(self):
        self.argparser = argparse.ArgumentParser(
            prog="engine", description="Many as One: one engine for every OpenCL device")
        self._sub = self.argparser.add_subparsers(dest="cmd", required=True)
        self._parsers = {}     # name -> argparse parser of a command parsed here
        self._own_argv = {}    # name -> main(argv) of a command that parses its own arguments
        self._handlers = {}    # name -> [(when, run)], tried before the command's own handler

    def command(self, name, run, help) -> argparse.ArgumentParser:
        """A command parsed here; ``run(args)`` serves it. Returns its parser."""
        p = self._parsers[name] = self._sub.add_parser(
            name, help=help, description=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.set_defaults(run=run)
        return p

    def add(self, name, main, help):
        self._sub.add_parser(name, help=help, add_help=False)
        self._own_argv[name] = main

    def parser(self, name) -> argparse.ArgumentParser:
        return self._parsers[name]

    def handle(self, name, when, run):
        self._handlers.setdefault(name, []).append((when, run))

    @property
    def names(self):
        return set(self._parsers) | set(self._own_argv)

    def load_extensions(self, argv):
        """Register the entry points of COMMANDS_GROUP: only those named after the command
        being run, or all of them when argv names none (help, a typo)."""
        found = list(entry_points(group=COMMANDS_GROUP))
        wanted = argv[0] if argv and argv[0] in self.names | {ep.name for ep in found} else None
        for ep in found:
            if wanted is not None and ep.name != wanted:
                continue
            try:
                register = ep.load()
            except Exception as exc:   # a broken or half-installed package must not take the engine down
                print(f"engine: the {ep.name!r} commands of {ep.value} are unavailable: "
                      f"{type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            register(self)

    def run(self, argv) -> int:
        if argv[:1] and argv[0] in self._own_argv:
            return self._own_argv[argv[0]](argv[1:])
        args = self.argparser.parse_args(argv)
        for when, run in self._handlers.get(args.cmd, ()):
            if when(args):
                return run(args)
        return args.run(args)


def _cmd_devices(args):
    from .runtime import devices, default_device
    devs = devices()
    if not devs:
        print("no OpenCL device found (pip install pocl-binary-distribution, or install a GPU's OpenCL driver)")
        return 1
    default = default_device()
    if args.json:
        print(json.dumps([d.describe() | {"default": d is default} for d in devs], indent=1))
        return 0
    for d in devs:
        info = d.describe()
        mark = "*" if d is default else " "
        print(f"{mark} [{d.index}] {d.platform} / {d.name}  kind={d.kind}  driver={d.driver}  "
              f"{info['compute_units']} compute units, {info['global_mem_mb']} MiB, {info['opencl']}")
    print("(* = default; choose with ENGINE_DEVICE=<index or name substring>)")
    return 0


def recorded(args, run_name, config):
    """The UI's record of one run, or None with --no-record.  RunRecorder's context marks
    the run crashed if the body raises, and closes it."""
    if args.no_record:
        return contextlib.nullcontext()
    from .runs import RunRecorder
    return RunRecorder.create(args.runs, name=run_name, config=config)


def announce(recorder, what):
    url = f"http://127.0.0.1:8050/runs/{recorder.run_id}" if recorder else None
    print(f"\n== {what}" + (f"; run {url}" if url else ""), flush=True)


def print_results(args, results):
    print("\nresult: " + ", ".join(f"{k} {v * 100:.2f}%" for k, v in results.items()))
    if not args.no_record:
        print(f"see the runs with: ./dev engine ui --runs {args.runs}   (then open http://127.0.0.1:8050)")


def _cmd_train(args):
    from .examples import digits
    from .runtime import default_device
    dev = default_device()
    print(f"device: {dev.platform} / {dev.name} ({dev.kind}, driver {dev.driver})", flush=True)
    models = digits.MODELS if args.model == "all" else (args.model,)
    results = {}
    for name in models:
        t0 = time.perf_counter()
        ckpt = None
        if args.checkpoint_dir or args.resume:
            from .checkpoint import CheckpointManager
            ckpt = CheckpointManager(os.path.join(args.checkpoint_dir or "checkpoints", name), keep=3)
        config = {"example": "digits", "model": name, "epochs": args.epochs, "device": dev.name,
                  "batch_size": args.batch_size, "lr": args.lr}
        with recorded(args, f"digits-{name}", config) as recorder:
            announce(recorder, f"{name}: training on scikit-learn digits")
            on_step, on_epoch = recording_hooks(recorder, name, args, dev)
            model, hist = digits.train(name, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                       seed=args.seed, progress=True, on_step=on_step, on_epoch=on_epoch,
                                       checkpoints=ckpt, resume=args.resume)
            acc = hist[-1]["test_accuracy"] if hist else float("nan")
            if recorder:
                recorder.finish("finished", test_accuracy=acc, seconds=time.perf_counter() - t0)
        results[name] = acc
        print(f"== {name}: held-out accuracy {acc * 100:.2f}% after {args.epochs} epochs "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
    print_results(args, results)
    return 0


def recording_hooks(recorder, name, args, dev):
    """(on_step, on_epoch) that log a digits training into `recorder` (None, None without one)."""
    if recorder is None:
        return None, None
    from .explain import explain
    from .examples import digits
    from .io import save
    from .nn import functional as F
    from .profile import profile
    from .tensor import tensor
    state = {"t": time.perf_counter(), "logged_graph": False, "step": 0}

    def on_step(step, epoch, metrics):
        now = time.perf_counter()
        dt, state["t"], state["step"] = now - state["t"], now, step
        recorder.log_metrics(step, epoch, loss=metrics["loss"], step_time_s=dt,
                             samples_per_s=args.batch_size / dt if dt > 0 else 0.0)

    def on_epoch(model, rec):
        if not state["logged_graph"]:
            state["logged_graph"] = True
            x, y, _, _ = digits.load_digits()
            xb, yb = tensor(x[:args.batch_size], device=dev), tensor(y[:args.batch_size], device=dev)
            recorder.log_graph(explain(lambda a, b: F.cross_entropy(model(a), b), xb, yb, backward=True).to_json())
            with profile() as p:
                F.cross_entropy(model(xb), yb).backward()
            for prm in model.parameters():
                prm.grad = None
            recorder.log_kernels(p.kernels)
        recorder.log_metrics(state["step"], rec["epoch"], accuracy=rec["test_accuracy"])
        path = os.path.join(recorder.path, "weights.tmp.safetensors")
        save(model.state_dict(), path)
        recorder.log_weights(path)
        os.remove(path)

    return on_step, on_epoch


def _cmd_kernels(args):
    from .examples import digits
    from .nn import functional as F
    from .optim import Adam
    from .profile import profile
    from .tensor import tensor, manual_seed
    manual_seed(0)
    x, y, _, _ = digits.load_digits()
    model = digits.build_model(args.model)
    opt = Adam(model.parameters())
    xb, yb = tensor(x[:args.batch_size]), tensor(y[:args.batch_size])
    if args.bundle:
        from .jit import training_step
        step = training_step(model, F.cross_entropy, opt)
        step(xb, yb)
        m = step.export_bundle(args.bundle)
        print(f"wrote {len(m['kernels'])} kernels ({len(m['launches'])} launches per step) to "
              f"{os.path.join(args.bundle, 'kernels.cl')} and manifest.json")
        return 0
    with profile() as p:
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
    if args.json:
        print(json.dumps(p.kernels, indent=1, default=str))
        return 0
    print(f"training step of the digits {args.model} (batch {args.batch_size}): {len(p.kernels)} kernel launches\n")
    for i, k in enumerate(p.kernels):
        print(f"--- [{i}] {k['name']}")
        print(f"template: {k['template']}   global size: {k['global_size']}   local size: {k['local_size']}"
              f"   time: {(k['time_ns'] or 0) / 1e3:.1f} us   device: {k['device']}")
        print(f"fused IR ops: {', '.join(k['fused_ops'])}")
        print(f"parameters: {json.dumps({a: b for a, b in k['params'].items()}, default=str)}")
        if not args.brief:
            print(k["source"])
    print(p.table())
    return 0


def _cmd_tune(args):
    from .autotune import GPU_SHAPES, search, search_variants
    from .runtime import default_device
    dev = default_device()
    if dev.kind != "gpu":
        print(f"tuning GEMM tiles on {dev.platform} / {dev.name} (driver {dev.driver}) ...", flush=True)
        res = search(dev, repeat=args.repeat)
        b = res["best"]
        print(f"best: {b['R']} x {b['W']} ({b['gflops']:.1f} GFLOP/s); saved in {res['path']}")
        return 0
    shapes = [tuple(int(x) for x in s.split(",")) for s in args.shapes] if args.shapes else GPU_SHAPES
    budget = f"a budget of {args.budget_s:.0f} s"
    print(f"tuning GEMM variants on {dev.platform} / {dev.name} (driver {dev.driver}), {budget}, "
          f"shapes (M, N, K) {shapes} ...", flush=True)
    res = search_variants(dev, shapes=shapes, budget_s=args.budget_s, repeat=args.repeat)
    for cls, v in res["best"].items():
        print(f"best {cls}: {v}")
    print(f"saved in {res['path']}")
    return 0


def _cmd_data(argv):
    from .data.cli import main as data_main   # pyarrow and scikit-learn load only for this command
    return data_main(argv)


def _cmd_onnx(argv):
    from .onnx.cli import main as onnx_main   # the optional onnx package loads only for this command
    return onnx_main(argv)


def build_commands() -> Commands:
    """The engine's own commands, before any extension is registered."""
    c = Commands()
    p = c.command("devices", _cmd_devices, help="list every OpenCL platform and device")
    p.add_argument("--json", action="store_true")
    p = c.command("train", _cmd_train, help="train the bundled digits example (MLP and CNN) and show the result")
    p.add_argument("--model", choices=("all", "mlp", "cnn"), default="all",
                   help="which network: the 64-128-64-10 MLP, the small CNN, or both one after the other")
    p.add_argument("--epochs", type=int, default=30, help="passes over the training images (80 %% of the 1,797; the rest is held out)")
    p.add_argument("--batch-size", type=int, default=64, help="images per optimizer step")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam's learning rate")
    p.add_argument("--seed", type=int, default=0, help="seeds weight init and shuffling (same seed, same run)")
    p.add_argument("--runs", default=os.environ.get("ENGINE_RUNS_DIR", "runs"), help="where runs are recorded")
    p.add_argument("--no-record", action="store_true", help="do not record the run for the UI")
    p.add_argument("--checkpoint-dir", default=None, help="save a checkpoint every epoch here")
    p.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint")
    p = c.command("kernels", _cmd_kernels, help="print the generated kernels of the example's training step")
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp", help="whose training step")
    p.add_argument("--batch-size", type=int, default=64, help="the batch the step is traced for")
    p.add_argument("--brief", action="store_true", help="omit the sources")
    p.add_argument("--bundle", metavar="DIR", help="write the step's kernels as one .cl + manifest.json (offline compilers)")
    p.add_argument("--json", action="store_true")
    p = c.command("tune", _cmd_tune, help="measure GEMM kernels on the default device and remember the best "
                                          "(CPUs: tiles; GPUs: variants per shape class)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (GPUs: the median counts)")
    p.add_argument("--budget-s", type=float, default=300.0,
                   help="GPUs: stop trying variants after this many seconds (the space holds tens of thousands; "
                        "0 = only each class's default)")
    p.add_argument("--shapes", nargs="+", metavar="M,N,K", help="GPUs: the GEMM shapes to tune for "
                                                                  "(default: a 784-4096-4096-10 MLP's training step)")
    c.add("data", _cmd_data, help="data tools: engine data convert|digits|info ... (see engine data --help)")
    c.add("onnx", _cmd_onnx, help="run or check an ONNX model: engine onnx run|ops|check ... (needs onnx)")
    return c


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = build_commands()
    commands.load_extensions(argv)
    return commands.run(argv)


if __name__ == "__main__":
    sys.exit(main())
