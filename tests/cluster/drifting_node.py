"""An engine-node whose host optimizer nudges one weight after its third update, as a
nondeterministic device or a bug would (tests/cluster/test_runs.py: the driver's checksum
comparison catches it)."""
import sys

from cluster import node, optimizer

_update = optimizer.HostOptimizer.update


def drifting_update(self, params, grads):
    _update(self, params, grads)
    if self.t >= 3:
        params[0].flat[0] += 1e-3


optimizer.HostOptimizer.update = drifting_update

if __name__ == "__main__":
    sys.exit(node.main())
