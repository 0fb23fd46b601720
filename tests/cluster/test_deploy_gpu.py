"""deploy/k8s-gpu/ (one engine-node pod per GPU) agrees with itself, with the node's flags
and with the CPU deployment it must not collide with.  No GPU or cluster here: the
manifests are read, not applied."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GPU, CPU = ROOT / "deploy" / "k8s-gpu", ROOT / "deploy" / "k8s"


def docs(folder: Path) -> dict:
    out = {}
    for f in sorted(folder.glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d:
                out[d["kind"]] = d
    return out


def flags(args) -> dict:
    return dict(a[2:].split("=", 1) for a in args)


def test_gpu_statefulset_asks_one_gpu_per_pod_and_its_service_names_the_pods():
    m = docs(GPU)
    assert sorted(m) == ["Service", "StatefulSet"]
    sts, svc = m["StatefulSet"], m["Service"]
    pod = sts["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert svc["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert sts["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    f = flags(c["args"])
    assert f["device"] == "nvidia"
    assert f["advertise"] == f"$(POD_NAME).{svc['metadata']['name']}.$(POD_NAMESPACE).svc.cluster.local"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"control": int(f["listen"].rsplit(":", 1)[1]), "data": int(f["data-port"]),
                     "metrics": int(f["metrics"].rsplit(":", 1)[1])}
    assert {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]} == {k: k for k in ports}
    env = {e["name"]: e for e in c["env"]}
    assert env["ENGINE_NODE_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "engine-node-secret", "key": "secret"}


def test_gpu_and_cpu_deployments_do_not_select_each_other():
    gpu, cpu = docs(GPU), docs(CPU)
    gpu_labels = gpu["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    cpu_labels = cpu["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    assert not cpu["Service"]["spec"]["selector"].items() <= gpu_labels.items()
    assert not gpu["Service"]["spec"]["selector"].items() <= cpu_labels.items()
    assert gpu["Service"]["metadata"]["name"] != cpu["Service"]["metadata"]["name"]
    assert gpu["StatefulSet"]["metadata"]["name"] != cpu["StatefulSet"]["metadata"]["name"]


def test_gpu_image_carries_nvidias_opencl_icd():
    text = (ROOT / "deploy" / "Dockerfile.gpu").read_text()
    assert "echo libnvidia-opencl.so.1 > /etc/OpenCL/vendors/nvidia.icd" in text
    assert "NVIDIA_DRIVER_CAPABILITIES=compute" in text
    assert "USER 10001:10001" in text      # back to the CPU image's unprivileged user
