"""`engine train --nodes A,B`: the bundled digits example, data-parallel on running
engine-nodes, recorded for the UI like a local run.

The engine's command line gets --nodes from here through the entry point ``train`` of
the group ``many_as_one.commands`` (setup.cfg), so engine/ never imports the cluster.
"""
from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

from engine.cli import announce, print_results, recorded, recording_hooks
from engine.examples import digits
from engine.nn import functional as F
from engine.runtime import default_device
from engine.tensor import manual_seed

from . import transport as tp
from .driver import Cluster, ClusterError

__all__ = ["register", "train_on_nodes"]


def register(commands):
    """Adds --nodes to `engine train`; with it, train_on_nodes serves the command."""
    commands.parser("train").add_argument(
        "--nodes", default=os.environ.get("ENGINE_NODES"),
        help="comma-separated engine-node control addresses (tcp://host:7070,...): train data-parallel "
             "on them; the secret comes from ENGINE_NODE_SECRET [ENGINE_NODES]")
    commands.parser("train").add_argument(
        "--transport", default=os.environ.get("ENGINE_TRANSPORT", "float32"),
        help="with --nodes: the type gradients travel in around the ring, float32 (exact), bf16 or fp16 "
             "(summed in float32; half the bytes) [ENGINE_TRANSPORT]")
    commands.handle("train", lambda args: bool(args.nodes), train_on_nodes)


def train_on_nodes(args) -> int:
    """The same example as `engine train`, data-parallel over running engine-nodes
    (cluster.Cluster); held-out accuracy after every epoch from the nodes' weights."""
    secret = os.environ.get("ENGINE_NODE_SECRET")
    if not secret:
        print("engine train --nodes: set ENGINE_NODE_SECRET to the cluster's shared secret", file=sys.stderr)
        return 2
    addresses = [a.strip() for a in args.nodes.split(",") if a.strip()]
    try:
        transport = tp.canonical(args.transport)
    except ValueError as e:
        print(f"engine train --nodes: {e}", file=sys.stderr)
        return 2
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
                  "global_batch": args.batch_size, "lr": args.lr, "transport": transport}
        try:
            with recorded(args, f"digits-{name}-cluster", config) as recorder, \
                    tqdm(total=args.epochs * per_epoch, unit="step", mininterval=0.5) as bar:
                announce(recorder, f"{name}: training on {len(addresses)} engine-node(s)")
                log_step, log_epoch = recording_hooks(recorder, name, args, dev)
                # shares in steps of 1/8 of an even split: each new local batch size is one more
                # program for a node to build, so shares should not move by a sample at a time
                unit = max(1, args.batch_size // (8 * len(addresses)))
                cl = Cluster(addresses, secret, batch_multiple=unit, transport=transport)

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

                # the nodes run an epoch on their own, then wait: on_step's evaluation reads that epoch's weights
                res = cl.fit(model, F.cross_entropy, {"name": "adam", "lr": args.lr}, (xtr, ytr),
                             epochs=args.epochs, global_batch=args.batch_size, on_step=on_step, sync_every=per_epoch)
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
    print_results(args, results)
    return 0
