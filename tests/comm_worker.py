"""A rank for tests/test_collectives.py: python comm_worker.py NAME RANK WORLD ACTION OUT

ACTION is a JSON dict: {"op": "all_reduce" | "broadcast" | "stall" | "stall_inside" | "exit" | "abort",
"n": floats, "capacity": floats per chunk, "timeout": s, "delay": s before the op,
"seed": data seed, "root": broadcast root, "repeat": calls}. Results go to OUT (.npy) or,
for a failure, OUT + ".err" (the exception text)."""
import json
import os
import sys
import time

import numpy as np

from codext import _C


def data_for(seed, rank, n):
    rng = np.random.default_rng(seed * 1000 + rank)
    # mixed magnitudes: a float32 sum in another order gives other bits
    return (rng.standard_normal(n) * 10.0 ** rng.integers(-4, 5, n)).astype(np.float32)


def main():
    name, rank, world, action, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5]
    try:
        comm = _C.ShmComm(name, rank, world, timeout=action.get("timeout", 20.0),
                          capacity=action.get("capacity", 0))
        op = action["op"]
        if op == "stall" and rank == action.get("who", 1):
            time.sleep(60)
            return
        if op == "stall_inside" and rank == action.get("who", 1):
            comm.stall_next_all_reduce()  # CODEXT_FAULT's hang: wedged mid-collective
        if op == "exit" and rank == action.get("who", 1):
            os._exit(3)
        if op == "abort" and rank == action.get("who", 1):
            time.sleep(0.2)
            comm.abort("rank 1 gives up: boom")
            return
        results = []
        for i in range(action.get("repeat", 1)):
            time.sleep(action.get("delay", 0.0) * ((rank + i) % world))
            if op == "broadcast":
                buf = data_for(action.get("seed", 0), rank, action["n"])
                comm.broadcast(buf, action.get("root", 0))
            else:
                buf = data_for(action.get("seed", 0) + i, rank, action["n"])
                comm.all_reduce(buf)
            results.append(buf)
        np.save(out, np.stack(results))
    except Exception as e:  # the test reads the message
        with open(out + ".err", "w") as f:
            f.write(f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
