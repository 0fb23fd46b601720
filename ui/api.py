"""JSON API behind every page (documented in ui/API.md).

Read-only except POST /api/runs/<id>/note, which needs the token. Request values are
only ever used as run ids (checked against a strict pattern by the run store), integers,
or stored as data: nothing reaches a shell, eval, or a path outside the runs directory.
"""
import hmac

from flask import Blueprint, abort, current_app, jsonify, request

from ui import layers as layer_info

bp = Blueprint("api", __name__, url_prefix="/api")


def _store():
    return current_app.config["RUN_STORE"]


def _run_or_404(run_id):
    try:
        return _store().get(run_id)
    except KeyError:
        abort(404, description=f"unknown run {run_id!r}: see /api/runs for the list")


def _int_arg(name, default=None, lo=None, hi=None):
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        abort(400, description=f"query parameter {name!r} must be an integer, got {raw!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        abort(400, description=f"query parameter {name!r}={value} is out of range [{lo}, {hi}]")
    return value


def authenticated():
    token = current_app.config.get("UI_TOKEN")
    given = request.headers.get("Authorization", "")
    if not token or not given.startswith("Bearer "):
        return False
    return hmac.compare_digest(given[len("Bearer "):].encode(), token.encode())


@bp.get("/runs")
def runs():
    return jsonify(runs=_store().list_runs())


@bp.get("/runs/<run_id>")
def run(run_id):
    return jsonify(_run_or_404(run_id))


@bp.get("/runs/<run_id>/metrics")
def metrics(run_id):
    info = _run_or_404(run_id)
    since = _int_arg("since", None, lo=-1)
    return jsonify(run_id=run_id, status=info["status"],
                   metrics=_store().metrics(run_id, since=since))


@bp.get("/runs/<run_id>/graph")
def graph(run_id):
    _run_or_404(run_id)
    g = _store().graph(run_id)
    if g is None:
        abort(404, description=f"run {run_id!r} has no graph recorded (log_graph was not called)")
    return jsonify(g)


@bp.get("/runs/<run_id>/kernels")
def kernels(run_id):
    _run_or_404(run_id)
    return jsonify(run_id=run_id, kernels=_store().kernels(run_id))


@bp.get("/runs/<run_id>/layers")
def layers(run_id):
    info = _run_or_404(run_id)
    sample = _int_arg("sample", 0, lo=0, hi=10**6)
    try:
        return jsonify(layer_info.describe(_store(), info, sample))
    except layer_info.SampleError as e:
        abort(400, description=str(e))


@bp.post("/runs/<run_id>/note")
def note(run_id):
    if not authenticated():
        abort(401, description="changing a run needs 'Authorization: Bearer <token>' "
                               "(start the UI with --token or ENGINE_UI_TOKEN)")
    _run_or_404(run_id)
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("note"), str):
        abort(400, description='body must be JSON {"note": "<text>"}')
    _store().set_note(run_id, body["note"])
    return jsonify(_store().get(run_id))


@bp.get("/nodes")
def nodes():
    source = current_app.config["NODE_SOURCE"]
    try:
        listed = source()
    except Exception as e:  # a dead cluster must not take the UI down; show why instead
        return jsonify(nodes=[], source=source.description, error=f"{type(e).__name__}: {e}")
    return jsonify(nodes=listed, source=source.description, error=None)


@bp.errorhandler(400)
@bp.errorhandler(401)
@bp.errorhandler(404)
@bp.errorhandler(405)
def _json_error(e):
    return jsonify(error=e.name, message=e.description, status=e.code), e.code
