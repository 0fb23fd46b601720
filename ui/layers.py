"""Per-layer view of a run: shapes and IR ops (from the recorded graph), parameter counts
and weight statistics (from the run's weights), and activations for one test sample.

Activations need the model itself. The UI never runs code from a run: it rebuilds one of
the known example models by name (whitelist below), loads the run's weights into it and
feeds one sample of that example's own test set through it with forward hooks.
"""
import numpy as np

import engine
from engine.examples import digits

# Run config value "example" -> (build_model(name), () -> (x_train, y_train, x_test, y_test), model names).
EXAMPLES = {"digits": (digits.build_model, digits.load_digits, digits.MODELS)}
HIST_BINS = 24
MAX_VALUES = 4096  # activations up to this size are sent whole (digits CNN: 16x8x8 maps)


class SampleError(ValueError):
    """A bad sample index: the API answers 400 with this message."""


def stats(a):
    a = np.asarray(a, dtype=np.float64).ravel()
    if a.size == 0:
        return {"size": 0}
    counts, edges = np.histogram(a, bins=HIST_BINS)
    return {"size": int(a.size), "mean": float(a.mean()), "std": float(a.std()),
            "min": float(a.min()), "max": float(a.max()),
            "zeros": float(np.mean(a == 0)),
            "hist": {"counts": counts.tolist(), "edges": edges.tolist()}}


def _layer_of(param_name):
    return param_name.rsplit(".", 1)[0] if "." in param_name else ""


def _graph_scopes(graph):
    """scope -> {"ops": [...], "kernels": [...], "output_shape": shape of its last node}."""
    scopes = {}
    for n in (graph or {}).get("nodes", []):
        s = scopes.setdefault(n.get("scope") or "", {"ops": [], "kernels": [], "output_shape": None})
        s["ops"].append({"id": n["id"], "op": n["op"], "shape": n["shape"]})
        s["output_shape"] = n["shape"]
        if n.get("kernel") is not None and n["kernel"] not in s["kernels"]:
            s["kernels"].append(n["kernel"])
    return scopes


def _load_weights(store, run_id):
    path = store.weights_path(run_id)
    if path is None:
        return None
    return {k: v.numpy() for k, v in engine.load(str(path)).items()}


def _activations(config, weights, sample):
    """Returns (input, {layer: output ndarray}, label) or raises with a readable reason."""
    spec = EXAMPLES.get(config.get("example"))
    model_name = config.get("model")
    if spec is None or model_name not in spec[2]:
        raise LookupError(f"activations are available for the known examples only "
                          f"({', '.join(EXAMPLES)}); this run's config is {config!r}")
    build_model, load_data, _ = spec   # fixed functions from EXAMPLES, never anything named by the run
    _, _, x_test, y_test = load_data()
    if not 0 <= sample < len(x_test):
        raise SampleError(f"sample must be in [0, {len(x_test) - 1}], got {sample}")
    model = build_model(model_name)
    model.load_state_dict({k: engine.tensor(v) for k, v in weights.items()})
    outputs, handles = {}, []
    for name, mod in model.named_modules():
        if name:
            handles.append(mod.register_forward_hook(
                lambda m, i, out, name=name: outputs.__setitem__(name, out)))
    try:
        x = x_test[sample:sample + 1]
        model(engine.tensor(x)).numpy()
    finally:
        for h in handles:
            h.remove()
    return x[0], {k: v.numpy() for k, v in outputs.items()}, int(y_test[sample])


def _match_scopes(scopes, names):
    """Graph scopes carry the root module's class ("Sequential.fc1") while parameter and
    hook names do not ("fc1"). Where a scope's tail is a known layer name, its head is the
    root's prefix; strip that prefix from every scope. Returns {scope: layer name}."""
    heads = {sc.split(".", 1)[0] for sc in scopes
             if sc not in names and "." in sc and sc.split(".", 1)[1] in names}
    return {sc: sc.split(".", 1)[1] if "." in sc and sc.split(".", 1)[0] in heads else sc
            for sc in scopes}


def describe(store, info, sample):
    run_id = info["id"]
    result = {"run_id": run_id, "sample": sample, "activations_error": None}
    weights = outs = None
    try:
        weights = _load_weights(store, run_id)
    except Exception as e:  # show why instead of failing the whole page
        result["weights_error"] = f"{type(e).__name__}: {e}"
    if weights is None:
        result["activations_error"] = result.get("weights_error") or "run has no weights recorded"
    else:
        try:
            x, outs, label = _activations(info["config"], weights, sample)
            result["input"] = {"shape": list(x.shape), "values": np.ravel(x).tolist(), "label": label,
                               # the model's answer: argmax of the last layer's output
                               "prediction": int(np.argmax(list(outs.values())[-1])) if outs else None}
        except SampleError:
            raise
        except Exception as e:
            result["activations_error"] = f"{type(e).__name__}: {e}"

    # Layer order: execution order when activations ran, else parameter order, else graph.
    names = list(outs or {}) + [_layer_of(p) for p in weights or {}]
    scopes = {}
    by_scope = _graph_scopes(store.graph(run_id))
    for scope, name in _match_scopes(by_scope, set(names)).items():
        scopes[name] = by_scope[scope]
        names.append(name)
    layers = {}
    for name in names:
        if name and name not in layers:
            sc = scopes.get(name, {})
            layers[name] = {"name": name, "params": [], "param_count": 0, "ops": sc.get("ops", []),
                            "kernels": sc.get("kernels", []), "output_shape": sc.get("output_shape"),
                            "activation": None}
    for pname, arr in (weights or {}).items():
        lay = layers[_layer_of(pname)] if _layer_of(pname) else layers.setdefault("", {
            "name": "", "params": [], "param_count": 0, "ops": [], "kernels": [],
            "output_shape": None, "activation": None})
        lay["params"].append({"name": pname, "shape": list(arr.shape), "stats": stats(arr)})
        lay["param_count"] += int(arr.size)
    for name, out in (outs or {}).items():
        layers[name]["activation"] = {"shape": list(out.shape), "stats": stats(out),
                                      "values": out.ravel().tolist() if out.size <= MAX_VALUES else None}
    result["layers"] = list(layers.values())
    return result
