"""An engine-node on a libzmq without CURVE: the control plane falls back to the PLAIN
token (tests/cluster/test_hardening.py)."""
import sys

from cluster import auth, node

auth.curve_available = lambda: False

if __name__ == "__main__":
    sys.exit(node.main())
