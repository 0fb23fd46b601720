"""deploy/ describes a node that really runs: the manifests agree with each other and with
the flags, the StatefulSet's own args and env start a real engine-node, two such nodes on
fixed data ports train together, and the Dockerfile starts the declared console script.

What Kubernetes would do to the container spec is done here by hand: $(VAR) references
expanded from the downward API (pod engine-node-<i>, namespace default) and the secret;
then, to run on one host, 0.0.0.0 becomes 127.0.0.1 and the fixed ports become free ones."""
import configparser
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from cluster import Cluster, ReferenceMLP
from cluster.reference import blobs
from cluster_helpers import ROOT, SECRET, child_env, reference_fit, start_nodes

DEPLOY = ROOT / "deploy"
NAMESPACE = "default"


# --- reading the deployment files ------------------------------------------------------------
def manifests() -> dict:
    docs = [d for f in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    kinds = [d["kind"] for d in docs]
    assert sorted(kinds) == ["Service", "StatefulSet"], kinds
    return {d["kind"]: d for d in docs}


def container(sts) -> dict:
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    return c


def flags(args) -> dict:
    """--name=value and --name value, as argparse reads them."""
    out, it = {}, iter(args)
    for a in it:
        assert a.startswith("--"), f"positional argument {a!r} in the container args"
        name, eq, value = a[2:].partition("=")
        out[name] = value if eq else next(it)
    return out


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", (DEPLOY / "Dockerfile").read_text())
    return [(l.split(None, 1)[0].upper(), l.split(None, 1)[1].strip()) for l in text.splitlines()
            if l.strip() and not l.lstrip().startswith("#")]


def instruction(name: str) -> list[str]:
    return [rest for ins, rest in dockerfile() if ins == name]


def image_env() -> dict:
    return dict(kv.split("=", 1) for rest in instruction("ENV") for kv in rest.split())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pod_spec(ordinal: int, tmp_path: Path, advertise: str | None = None):
    """The container's (args, env, ports) for pod engine-node-<ordinal> as Kubernetes would
    start it, moved onto loopback: ports maps each named container port to a free one."""
    sts = manifests()["StatefulSet"]
    c = container(sts)
    fields = {"metadata.name": f"{sts['metadata']['name']}-{ordinal}", "metadata.namespace": NAMESPACE}
    ports = {p["name"]: (p["containerPort"], free_port()) for p in c["ports"]}

    def local(s: str) -> str:
        s = s.replace("0.0.0.0", "127.0.0.1")
        for fixed, free in ports.values():
            s = re.sub(rf"(?<![0-9]){fixed}(?![0-9])", str(free), s)
        return s

    mounts = {m["mountPath"]: tmp_path / f"{m['name']}-{ordinal}" for m in c.get("volumeMounts", [])}
    env = {k: local(v) for k, v in image_env().items()}
    for e in c["env"]:
        src = e.get("valueFrom", {})
        if "fieldRef" in src:
            value = fields[src["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in src:
            value = SECRET
        else:
            value = local(e["value"])
        for path, tmp in mounts.items():   # a volume's path, on this host: a temporary directory
            if value == path or value.startswith(path + "/"):
                value = str(tmp) + value[len(path):]
        env[e["name"]] = value
    expand = lambda s: re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), s)
    args = [local(expand(a)) for a in c["args"]]
    if advertise:
        args = [f"--advertise={advertise}" if a.startswith("--advertise") else a for a in args]
    return args, env, {name: free for name, (_, free) in ports.items()}


def ready_info(proc) -> dict:
    line = proc.stdout.readline()
    assert line.startswith("engine-node ready"), (line, proc.log())
    return dict(kv.split("=", 1) for kv in line.split()[2:])


def get(url: str):
    return json.loads(urllib.request.urlopen(url, timeout=5).read())


# --- the files agree with each other -------------------------------------------------------------
def test_statefulset_and_headless_service_agree_with_the_flags():
    m = manifests()
    svc, sts = m["Service"], m["StatefulSet"]
    c, pod = container(sts), sts["spec"]["template"]
    assert svc["spec"]["clusterIP"] == "None"           # headless: one DNS name per pod
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    labels = pod["metadata"]["labels"]
    for selector in (svc["spec"]["selector"], sts["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items(), (selector, labels)

    f = flags(c["args"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"control": port_of(f["listen"]), "data": int(f["data-port"]), "metrics": port_of(f["metrics"])}
    assert f["listen"].startswith("tcp://0.0.0.0:") and f["metrics"].startswith("0.0.0.0:")   # reachable from peers
    for p in svc["spec"]["ports"]:
        assert p["targetPort"] in ports and p["port"] == ports[p["targetPort"]], p
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == set(ports)

    service = svc["metadata"]["name"]
    assert f["advertise"] == f"$(POD_NAME).{service}.$(POD_NAMESPACE).svc.cluster.local"
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    ref = env["ENGINE_NODE_SECRET"]["valueFrom"]["secretKeyRef"]
    for doc in (DEPLOY / "README.md", DEPLOY / "k8s" / "statefulset.yaml"):   # the documented command makes that Secret
        made = re.findall(r"kubectl create secret generic (\S+) --from-literal=(\w+)=", doc.read_text())
        assert made and all(m == (ref["name"], ref["key"]) for m in made), (doc, made, ref)

    for probe in ("livenessProbe", "readinessProbe"):
        get_ = c[probe]["httpGet"]
        assert get_["path"] == "/healthz" and ports.get(get_["port"], get_["port"]) == ports["metrics"], probe
    notes = pod["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/path"] == "/metrics"
    assert int(notes["prometheus.io/port"]) == ports["metrics"]
    assert {"cpu", "memory"} <= c["resources"]["requests"].keys()
    # the SIGTERM path waits up to 5 s for the step in progress, then closes its sockets
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 15
    security = pod["spec"]["securityContext"]
    user = instruction("USER")[-1].split(":")[0]
    assert security["runAsNonRoot"] is True and str(security["runAsUser"]) == user != "0"


def test_dockerfile_runs_the_declared_console_script_on_the_manifest_ports():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    scripts = dict(l.replace(" ", "").split("=", 1) for l in cfg["options.entry_points"]["console_scripts"].split("\n") if l)
    (entry,) = instruction("ENTRYPOINT")
    assert json.loads(entry) == ["engine-node"] and scripts["engine-node"] == "cluster.node:main"
    assert instruction("FROM")[0].startswith("python:3.11-slim")
    assert any("pip install" in r and "/src" in r for r in instruction("RUN"))
    c = container(manifests()["StatefulSet"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    exposed = {int(p.split("/")[0]) for rest in instruction("EXPOSE") for p in rest.split()}
    assert exposed == set(ports.values())
    env = image_env()   # the image's defaults name the same ports as the StatefulSet's flags
    assert port_of(env["ENGINE_NODE_LISTEN"]) == ports["control"] and int(env["ENGINE_NODE_DATA_PORT"]) == ports["data"]
    assert port_of(env["ENGINE_NODE_METRICS"]) == ports["metrics"]
    assert "ENGINE_NODE_SECRET" not in env                  # never baked into the image
    assert "/healthz" in instruction("HEALTHCHECK")[0]


# --- the StatefulSet's container, started for real -------------------------------------------------
def test_pod_args_start_a_node_on_fixed_ports_that_answers_healthz(procs, tmp_path):
    args, env, ports = pod_spec(0, tmp_path)
    script = Path(sys.executable).with_name("engine-node")   # what ENTRYPOINT runs; ./dev installs it
    assert script.exists(), f"{script} missing: install the project (./dev does, pip install -e .)"
    node = procs.start([str(script), *args], env=child_env(**env))
    info = ready_info(node)
    name = f"engine-node-0.engine-node.{NAMESPACE}.svc.cluster.local"   # the advertised DNS name, not dialled here
    assert info == {"control": f"tcp://{name}:{ports['control']}", "data": f"tcp://{name}:{ports['data']}",
                    "metrics": f"http://127.0.0.1:{ports['metrics']}"}
    health = get(info["metrics"] + "/healthz")
    assert health["status"] == "ok" and not {"node", "data", "job", "data_dir"} & set(health)   # nothing sensitive
    for s in (socket.create_connection(("127.0.0.1", ports[p]), timeout=5) for p in ("control", "data")):
        s.close()                                           # both really bound on the fixed ports

    # the image's HEALTHCHECK command, run as Docker would, against this node; then a dead one
    (check,) = instruction("HEALTHCHECK")
    cmd = json.loads(check[check.index("CMD") + 3:])
    assert cmd[0] == "python"
    run_check = lambda: subprocess.run([sys.executable, *cmd[1:]], env=child_env(ENGINE_NODE_METRICS=f"127.0.0.1:{ports['metrics']}"),
                                       capture_output=True, timeout=30).returncode
    assert run_check() == 0
    grace = manifests()["StatefulSet"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    node.send_signal(signal.SIGTERM)                        # what the kubelet sends first
    assert node.wait(grace) == 0, node.log()
    assert run_check() != 0


def test_taken_data_port_is_a_clear_startup_error(procs):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        p = procs.start(["-m", "cluster.node", "--listen", "tcp://127.0.0.1:*", "--metrics", "127.0.0.1:0"],
                        env=child_env(ENGINE_NODE_SECRET=SECRET, ENGINE_NODE_DATA_PORT=port))   # the variable, not the flag
        assert p.wait(30) != 0
        assert f"cannot bind the ring data socket tcp://127.0.0.1:{port}" in p.log() and "--data-port" in p.log()
    finally:
        holder.close()


def test_two_pods_on_fixed_data_ports_train_together(procs, tmp_path):
    pods = [pod_spec(i, tmp_path, advertise="127.0.0.1") for i in range(2)]
    nodes = []
    for args, env, ports in pods:   # start_nodes' own flags come first; the pod's args override them
        env.pop("ENGINE_NODE_SECRET")                       # start_nodes sets the same one
        (node,) = start_nodes(procs, 1, extra_args=args, **env)
        assert node["data"] == f"tcp://127.0.0.1:{ports['data']}" and node["control"] == f"tcp://127.0.0.1:{ports['control']}"
        nodes.append(node)
    xtr, ytr, _, _ = blobs()
    spec = {"name": "sgd", "lr": 0.1, "momentum": 0.9}
    res = Cluster([n["control"] for n in nodes], SECRET, heartbeat_s=0.2).fit(
        ReferenceMLP([64, 16, 10]), None, spec, (xtr, ytr), global_batch=64, max_steps=6)
    assert res.step == 6 and all(h["world"] == 2 for h in res.history)
    want = reference_fit(ReferenceMLP([64, 16, 10]), spec, xtr, ytr, 64, 6)
    for k in want:
        np.testing.assert_allclose(res.params[k], want[k], rtol=1e-4, atol=1e-5)
    for n in nodes:   # the gradients went over the ring, through the fixed data ports
        metrics = urllib.request.urlopen(n["metrics"] + "/metrics", timeout=5).read().decode()
        sent = [l for l in metrics.splitlines() if l.startswith("engine_node_allreduce_bytes_total")]
        assert float(sent[0].split()[-1]) > 0, sent


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed (the checks above still ran)")
def test_kubectl_decodes_the_manifests_offline():
    """`kubectl set env --local` decodes each object into the Kubernetes API types without a
    server (apply --dry-run=client needs one for discovery): a wrong kind or a wrongly typed
    field fails here."""
    r = subprocess.run(["kubectl", "set", "env", "--local", "-f", str(DEPLOY / "k8s"), "--list"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for name in ("POD_NAME from field path metadata.name", "ENGINE_NODE_SECRET from secret engine-node-secret, key secret"):
        assert name in r.stdout, r.stdout
    (cmd,) = set(re.findall(r"kubectl create secret generic .*", (DEPLOY / "README.md").read_text()))
    cmd = re.sub(r'"\$\(openssl rand -hex 32\)"', "x", cmd).split()[1:]
    r = subprocess.run(["kubectl", *cmd, "--dry-run=client", "-o", "json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    secret = json.loads(r.stdout)
    assert secret["kind"] == "Secret" and list(secret["data"]) == ["secret"]
