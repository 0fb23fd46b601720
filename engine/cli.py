"""The ``engine`` command: devices, train, kernels, data, ui."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

__all__ = ["main"]


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


def _recorded(args, run_name, config):
    """The UI's record of one run, or None with --no-record.  RunRecorder's context marks
    the run crashed if the body raises, and closes it."""
    if args.no_record:
        return contextlib.nullcontext()
    from .runs import RunRecorder
    return RunRecorder.create(args.runs, name=run_name, config=config)


def _announce(recorder, what):
    url = f"http://127.0.0.1:8050/runs/{recorder.run_id}" if recorder else None
    print(f"\n== {what}" + (f"; run {url}" if url else ""), flush=True)


def _print_results(args, results):
    print("\nresult: " + ", ".join(f"{k} {v * 100:.2f}%" for k, v in results.items()))
    if not args.no_record:
        print(f"see the runs with: ./dev engine ui --runs {args.runs}   (then open http://127.0.0.1:8050)")


def _cmd_train(args):
    from .examples import digits
    from .runtime import default_device
    if args.nodes:
        return _cmd_train_on_nodes(args)
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
        with _recorded(args, f"digits-{name}", config) as recorder:
            _announce(recorder, f"{name}: training on scikit-learn digits")
            on_step, on_epoch = _recording_hooks(recorder, name, args, dev)
            model, hist = digits.train(name, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                       seed=args.seed, progress=True, on_step=on_step, on_epoch=on_epoch,
                                       checkpoints=ckpt, resume=args.resume)
            acc = hist[-1]["test_accuracy"] if hist else float("nan")
            if recorder:
                recorder.finish("finished", test_accuracy=acc, seconds=time.perf_counter() - t0)
        results[name] = acc
        print(f"== {name}: held-out accuracy {acc * 100:.2f}% after {args.epochs} epochs "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
    _print_results(args, results)
    return 0


def _cmd_train_on_nodes(args):
    """engine train --nodes A,B: the same example, data-parallel over running engine-nodes
    (cluster.Cluster); held-out accuracy after every epoch from the nodes' weights."""
    from cluster import Cluster, ClusterError   # noqa: the CLI sits above every layer
    from tqdm import tqdm
    from .examples import digits
    from .nn import functional as F
    from .runtime import default_device
    from .tensor import manual_seed
    secret = os.environ.get("ENGINE_NODE_SECRET")
    if not secret:
        print("engine train --nodes: set ENGINE_NODE_SECRET to the cluster's shared secret", file=sys.stderr)
        return 2
    addresses = [a.strip() for a in args.nodes.split(",") if a.strip()]
    if args.checkpoint_dir or args.resume:
        print("engine train --nodes: checkpoints are not supported across nodes yet", file=sys.stderr)
        return 2
    dev = default_device()   # the driver traces the step and evaluates here; nodes train on their own devices
    xtr, ytr, xte, yte = digits.load_digits()
    per_epoch = len(xtr) // args.batch_size
    models = digits.MODELS if args.model == "all" else (args.model,)
    results = {}
    for name in models:
        manual_seed(args.seed)
        model = digits.build_model(name)
        t0 = time.perf_counter()
        config = {"example": "digits", "model": name, "epochs": args.epochs, "nodes": addresses,
                  "global_batch": args.batch_size, "lr": args.lr}
        try:
            with _recorded(args, f"digits-{name}-cluster", config) as recorder, \
                    tqdm(total=args.epochs * per_epoch, unit="step", mininterval=0.5) as bar:
                _announce(recorder, f"{name}: training on {len(addresses)} engine-node(s)")
                log_step, log_epoch = _recording_hooks(recorder, name, args, dev)
                # shares in steps of 1/8 of an even split: each new local batch size is one more
                # program for a node to build, so shares should not move by a sample at a time
                unit = max(1, args.batch_size // (8 * len(addresses)))
                cl = Cluster(addresses, secret, batch_multiple=unit)

                def on_step(rec):
                    bar.update(1)
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", nodes=rec["world"], shares=rec["shares"], refresh=False)
                    if log_step:
                        log_step(rec["step"], rec["epoch"], {"loss": rec["loss"]})
                    if rec["step"] % per_epoch == 0:
                        model.load_state_dict(cl.params())
                        acc = digits.evaluate(model, xte, yte, dev)
                        bar.write(f"epoch {rec['epoch'] + 1}/{args.epochs}: loss {rec['loss']:.4f}, "
                                  f"held-out accuracy {acc * 100:.2f}%, shares {rec['shares']}")
                        if log_epoch:
                            log_epoch(model, {"epoch": rec["epoch"] + 1, "test_accuracy": acc})

                res = cl.fit(model, F.cross_entropy, {"name": "adam", "lr": args.lr}, (xtr, ytr),
                             epochs=args.epochs, global_batch=args.batch_size, on_step=on_step)
                acc = digits.evaluate(model, xte, yte, dev)   # fit left the final weights in the model
                if recorder:
                    recorder.finish("finished", test_accuracy=acc, seconds=time.perf_counter() - t0)
        except ClusterError as exc:   # the run is already recorded as crashed
            print(f"engine train --nodes: {exc}", file=sys.stderr)
            return 1
        for e in res.events:
            print(f"  {e['text']}")
        results[name] = acc
        print(f"== {name}: held-out accuracy {acc * 100:.2f}% after {args.epochs} epochs on "
              f"{len(addresses)} node(s) ({time.perf_counter() - t0:.1f} s)", flush=True)
    _print_results(args, results)
    return 0


def _recording_hooks(recorder, name, args, dev):
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
    from .autotune import search
    from .runtime import default_device
    dev = default_device()
    print(f"tuning GEMM tiles on {dev.platform} / {dev.name} (driver {dev.driver}) ...", flush=True)
    res = search(dev, repeat=args.repeat)
    b = res["best"]
    print(f"best: {b['R']} x {b['W']} ({b['gflops']:.1f} GFLOP/s); saved in {res['path']}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["data"]:
        from .data_cli import main as data_main
        return data_main(argv[1:])
    if argv[:1] == ["ui"]:
        from ui.app import main as ui_main   # noqa: the CLI sits above every layer
        return ui_main(argv[1:])
    ap = argparse.ArgumentParser(prog="engine", description="Many as One: one engine for every OpenCL device")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("devices", help="list every OpenCL platform and device")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("train", help="train the bundled digits example (MLP and CNN) and show the result")
    p.add_argument("--model", choices=("all", "mlp", "cnn"), default="all")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default=os.environ.get("ENGINE_RUNS_DIR", "runs"), help="where runs are recorded")
    p.add_argument("--no-record", action="store_true", help="do not record the run for the UI")
    p.add_argument("--checkpoint-dir", default=None, help="save a checkpoint every epoch here")
    p.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint")
    p.add_argument("--nodes", default=os.environ.get("ENGINE_NODES"),
                   help="comma-separated engine-node control addresses (tcp://host:7070,...): train data-parallel "
                        "on them; the secret comes from ENGINE_NODE_SECRET [ENGINE_NODES]")
    p = sub.add_parser("kernels", help="print the generated kernels of the example's training step")
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--brief", action="store_true", help="omit the sources")
    p.add_argument("--bundle", metavar="DIR", help="write the step's kernels as one .cl + manifest.json (offline compilers)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("tune", help="measure GEMM tile shapes on the default device and remember the best")
    p.add_argument("--repeat", type=int, default=3)
    sub.add_parser("data", help="data tools: engine data convert|digits ... (see engine data --help)")
    sub.add_parser("ui", help="serve the web UI: engine ui [--host H --port P --runs DIR --token T]")
    args = ap.parse_args(argv)
    return {"devices": _cmd_devices, "train": _cmd_train, "kernels": _cmd_kernels, "tune": _cmd_tune}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
