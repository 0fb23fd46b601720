"""An engine-node that dies (exit status 9, as a SIGKILL would leave it) when it is about
to publish the loss piece of its VANISH_AT_CALL-th streamed all-reduce: after every
gradient piece went through shared memory, while the other ranks have the tail of that
step queued behind it (tests/cluster/test_device_training.py)."""
import os
import sys

from cluster import node, shmstream

_publish = shmstream.Stream.publish
AT_CALL = int(os.environ.get("VANISH_AT_CALL", "4"))


def vanishing_publish(self, views, p, t):
    if p == len(self.pieces) - 1 and t >= AT_CALL:
        os._exit(9)
    _publish(self, views, p, t)


shmstream.Stream.publish = vanishing_publish

if __name__ == "__main__":
    sys.exit(node.main())
