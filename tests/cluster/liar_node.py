"""An engine-node that holds the secret but lies in the all-reduce plan agreement: it
announces one element more than it will send (tests/cluster/test_hardening.py)."""
import sys

from cluster import node, ring

_send = ring.RingLinks.send


def lying_send(self, type, fields, tensors=()):
    if type == "plan":
        fields = dict(fields, sizes=[s + 1 for s in fields["sizes"]])
    return _send(self, type, fields, tensors)


ring.RingLinks.send = lying_send

if __name__ == "__main__":
    sys.exit(node.main())
