"""Flask app factory and `engine ui` entry point.

Pages are thin HTML shells; their scripts fetch the JSON API (ui/api.py) and build the
DOM with textContent only, so every name that came from a run is shown as text. A strict
Content-Security-Policy (no inline script) backs that up.
"""
import argparse
import hmac
import os
import sys

from flask import Flask, abort, jsonify, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from engine.runs import default_root
from ui import api, nodes
from ui.runs import RunStore

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
COOKIE = "engine_ui_token"


def _same(given, token):
    return bool(given) and bool(token) and hmac.compare_digest(str(given).encode(), token.encode())


def create_app(runs_root=None, token=None, cluster_addresses=None, node_source=None,
               token_for_reads=False, trusted_hosts=None):
    """runs_root: directory of runs (default $ENGINE_RUNS_DIR or ./runs).
    token: enables the few write endpoints for requests carrying 'Bearer <token>'.
    token_for_reads: also require it to read anything (set by main() when the UI listens
    beyond localhost); a browser passes ?token=... once and gets a cookie.
    trusted_hosts: Host header values to accept (main() sets the loopback names when it
    binds loopback, so a web page cannot reach the UI through DNS rebinding).
    cluster_addresses: engine-node metrics endpoints to poll for the Nodes page.
    node_source: callable returning a list of node dicts (see ui/nodes.py); default polls
    cluster_addresses, or reads <runs_root>/nodes.json when there are none."""
    root = runs_root if runs_root is not None else default_root()
    app = Flask(__name__)
    app.config.update(RUN_STORE=RunStore(root), UI_TOKEN=token or None, JSON_SORT_KEYS=False,
                      TRUSTED_HOSTS=trusted_hosts)
    if node_source is None:
        node_source = nodes.default_source(root, cluster_addresses)
    elif not isinstance(node_source, nodes.NodeSource):
        node_source = nodes.NodeSource(node_source, getattr(node_source, "__doc__", None)
                                       or "injected node status function")
    app.config["NODE_SOURCE"] = node_source
    app.register_blueprint(api.bp)
    if token_for_reads and not token:
        raise ValueError("token_for_reads=True needs a token")

    @app.before_request
    def gate():
        if not token_for_reads or request.path.startswith("/static/"):
            return None
        if api.authenticated() or _same(request.cookies.get(COOKIE), token):
            return None
        if _same(request.args.get("token"), token):
            if not request.endpoint:
                return None  # no such page: let routing answer 404
            # Trade the token in the URL for a cookie so it leaves the address bar/history.
            args = {k: v for k, v in request.args.items() if k != "token"}
            resp = redirect(url_for(request.endpoint, **(request.view_args or {}), **args))
            resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
            return resp
        abort(401, description="this UI needs a token: open it once with ?token=<token> "
                               "or send 'Authorization: Bearer <token>'")

    def known_run(run_id):
        try:
            return app.config["RUN_STORE"].get(run_id)
        except KeyError:
            abort(404, description=f"unknown run {run_id!r}")

    @app.get("/")
    def index():
        return redirect(url_for("runs_page"))

    @app.get("/runs")
    def runs_page():
        return render_template("runs.html", page="runs", run=None)

    @app.get("/runs/<run_id>")
    def run_page(run_id):
        return render_template("run.html", page="runs", run=known_run(run_id))

    @app.get("/runs/<run_id>/graph")
    def graph_page(run_id):
        return render_template("graph.html", page="graph", run=known_run(run_id))

    @app.get("/runs/<run_id>/layers")
    def layers_page(run_id):
        return render_template("layers.html", page="layers", run=known_run(run_id))

    @app.get("/nodes")
    def nodes_page():
        return render_template("nodes.html", page="nodes", run=None)

    @app.after_request
    def headers(resp):
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    @app.errorhandler(HTTPException)
    def http_error(e):
        if request.path.startswith("/api/"):
            return jsonify(error=e.name, message=e.description, status=e.code), e.code
        return render_template("error.html", page=None, run=None, error=e), e.code

    return app


def main(argv=None):
    p = argparse.ArgumentParser(prog="engine ui", description="Web UI: runs, graph, layers, nodes")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1); any other needs --token")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument("--runs", default=None, help="runs directory (default $ENGINE_RUNS_DIR or ./runs)")
    p.add_argument("--token", default=os.environ.get("ENGINE_UI_TOKEN"),
                   help="token for write requests (default $ENGINE_UI_TOKEN)")
    p.add_argument("--cluster", action="append", default=[], metavar="ADDR",
                   help="an engine-node's metrics endpoint (http://host:port, serving /healthz and "
                        "/metrics) to show on the Nodes page; repeatable")
    args = p.parse_args(argv)
    if args.host not in LOCAL_HOSTS and not args.token:
        print(f"engine ui: refusing to listen on {args.host} without a token: anyone who can "
              f"reach it could read your runs (with a token, every request needs it). Pass --token or set ENGINE_UI_TOKEN, or bind "
              f"127.0.0.1 and use an SSH tunnel.", file=sys.stderr)
        return 2
    local = args.host in LOCAL_HOSTS
    app = create_app(args.runs, token=args.token, cluster_addresses=args.cluster,
                     token_for_reads=not local,
                     trusted_hosts=["127.0.0.1", "localhost", "::1", "[::1]"] if local else None)
    print(f"engine ui: http://{args.host}:{args.port}/  (runs: {app.config['RUN_STORE'].root})",
          file=sys.stderr)
    app.run(host=args.host, port=args.port, debug=False, use_reloader=False, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
