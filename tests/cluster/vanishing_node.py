"""An engine-node that dies (exit status 9, as a SIGKILL would leave it) in its
VANISH_AT_CALL-th streamed all-reduce without publishing that call's loss piece, once it
has published every gradient piece: the other ranks then have the tail of that step
queued behind it and wait for its loss (tests/cluster/test_device_training.py).  A node
publishes its loss as soon as it lands, usually before its last gradients, so the loss
piece is held back until those are out."""
import os
import sys

from cluster import node, shmstream

_publish = shmstream.Stream.publish
AT_CALL = int(os.environ.get("VANISH_AT_CALL", "4"))
_held, _sent = set(), set()     # calls whose loss piece was held back, whose last gradient piece went out


def vanishing_publish(self, views, p, t):
    loss_piece = len(self.pieces) - 1
    if t >= AT_CALL and p == loss_piece:
        _held.add(t)
    else:
        _publish(self, views, p, t)
        if t >= AT_CALL and p == loss_piece - 1:
            _sent.add(t)
    if _held & _sent:
        os._exit(9)


shmstream.Stream.publish = vanishing_publish

if __name__ == "__main__":
    sys.exit(node.main())
