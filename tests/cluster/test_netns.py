"""Nodes in separate network namespaces (veth + bridge, tc bandwidth limit) train together."""
import json
import os
import shutil
import subprocess

import pytest

from cluster_helpers import ROOT, child_env

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None,
                                reason="network namespaces need root and iproute2 (ip, tc); "
                                       "run as root, e.g. in the CI container")


def namespaces(prefix):
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [l.split()[0] for l in out.splitlines() if l.startswith(prefix)]


def test_training_across_network_namespaces():
    prefix = f"mt{os.getpid() % 100000}"
    env = child_env(NETNS_PREFIX=prefix, EPOCHS=4)
    try:
        r = subprocess.run([str(ROOT / "scripts/netns_train.sh"), "3", "200mbit"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out["nodes"] == [f"tcp://10.77.0.{10 + i}:7070" for i in range(3)]
        assert out["world"] == 3 and out["steps"] == 4 * (1438 // 64)
        assert out["accuracy"] > 0.9, out
        assert "rate 200mbit" in r.stderr
    finally:
        subprocess.run([str(ROOT / "scripts/netns_down.sh")], env=child_env(NETNS_PREFIX=prefix))
    assert namespaces(prefix) == []
