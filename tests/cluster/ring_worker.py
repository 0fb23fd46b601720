"""One rank of a ring all-reduce in its own process (used by test_allreduce).

Prints its data endpoint, reads the peer list (JSON) from stdin, reduces a
deterministic array and saves the result as .npy (loaded with allow_pickle=False).
"""
import json
import sys

import numpy as np
import zmq

from cluster import RingLinks, allreduce, ring


def main():
    rank, length, out, secret = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4].encode()
    size_override = int(sys.argv[5]) if len(sys.argv) > 5 else length
    # "ring": tiny buckets and segments, never the small-buffer path; "gather": the
    # small-buffer path; "production": engine-node's context and automatic sizes
    mode = sys.argv[6] if len(sys.argv) > 6 else "ring"
    ctx = ring.context() if mode == "production" else zmq.Context()
    links = RingLinks(ctx, "tcp://127.0.0.1:*", secret, name=f"rank{rank}", timeout_s=20)
    print(links.endpoint, flush=True)
    peers = json.loads(sys.stdin.readline())
    links.connect(1, rank, peers)
    x = np.random.default_rng(rank).standard_normal(size_override).astype(np.float32)
    try:
        if mode == "ring":
            allreduce(links, x, step=7, bucket_bytes=4096, segment_bytes=1000, small_bytes=0)
        elif mode == "gather":
            allreduce(links, x, step=7, small_bytes=1 << 30)
        else:
            allreduce(links, x, step=7)
    except Exception as e:  # reported to the test through the exit code and stderr
        print(f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)
        links.say_bye("error")
        links.close()
        sys.exit(3)
    np.save(out, x)
    links.close(linger_ms=20_000)   # our last forwards may still be queued for a slower neighbour
    ctx.term()


if __name__ == "__main__":
    main()
