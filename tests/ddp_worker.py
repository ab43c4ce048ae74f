"""One rank of tests/test_ddp.py and tests/test_emu_ddp.py:
python ddp_worker.py SHM_NAME RANK WORLD OUT JSON

Trains the tiny model of tests/test_train.py with the C trainer joined to the others
through a ShmComm and saves the final weights (and EMA) to OUT (.npz). Each rank starts
from different weights (seed 100 + rank): the broadcast must make them rank 0's.
JSON: n (training images), batch, accum, top_k, epochs (2), device ("cpu", or "cuda" on
the emulated library named by CODEXT_CUDA_EMULATED or a GPU: every rank on cuda:0;
"cuda:rank": rank r on cuda:r, as NCCL needs on a machine with several GPUs), oom_step (an out of memory injected
into that global step, -1: none) on rank oom_rank only (default: every rank).
connect (true: join through codext._dist.connect with the torchrun variables that
run_ranks sets, so a device rank takes NCCL when the CUDA library provides it, or shared
memory under CODEXT_GPU_TRANSPORT=shm; else a ShmComm named SHM_NAME), timeout (s, 30),
abort_rank (that rank aborts the communicator right after joining and fails; the others
must fail in their next collective), stall_rank (that rank connects, then sleeps twice the
timeout without taking part and fails), stall_inside_rank (that rank arms the hang fault of
CODEXT_FAULT, comm.stall_next_all_reduce: it stalls inside its first training all-reduce
until its communicator is aborted), overlap (default true: gradient buckets averaged
while the last backward runs; false: after it), bucket_floats (0: the trainer's default). Failures go to OUT.err as "Type: message [after T s]"
(T: seconds since the worker started)."""
import json
import os
import sys
import time

if os.environ.get("CODEXT_CUDA_EMULATED"):  # before _C opens the CUDA library
    os.environ["CODEXT_CUDA_LIBRARY"] = os.environ["CODEXT_CUDA_EMULATED"]

import numpy as np

import codext
from codext import _C
from codext.model import Model

if __name__ == "__main__":
    name, rank, world, out, args = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])
    started = time.monotonic()
    conn = None
    try:
        device = args.get("device", "cpu")
        device = {"cuda": "cuda:0", "cuda:rank": f"cuda:{rank}"}.get(device, device)
        if args.get("connect"):
            from codext import _dist
            conn = _dist.connect(_dist.place_from_env(), timeout=args.get("timeout", 30),
                                 device=device)
            comm = conn.comm
        else:
            comm = _C.ShmComm(name, rank, world, timeout=args.get("timeout", 30))
        if rank == args.get("stall_rank", -1):
            time.sleep(2 * args.get("timeout", 30))
            raise RuntimeError(f"rank {rank} stalled on purpose")
        data = codext.data.synthetic(args["n"], 0, 32, seed=2)
        model = Model(backbone="edgenext_tiny_test", decoder_dim=16, num_experts=3,
                      moe_top_k=args.get("top_k", 0), img_size=32, seed=100 + rank,
                      device=device)
        epochs = args.get("epochs", 2)
        trainer = _C.Trainer(model._native, args["n"], 32, 32, batch_size=args["batch"],
                             accumulation_steps=args.get("accum", 1), epochs=epochs,
                             stage1_epochs=1, lr=1e-3, grad_clip=0.5, seed=11, world_size=world,
                             rank=rank, overlap_comm=args.get("overlap", True),
                             bucket_floats=args.get("bucket_floats", 0))
        if args.get("oom_step", -1) >= 0 and rank == args.get("oom_rank", rank):
            trainer.inject_oom(args["oom_step"])
        trainer.set_comm(comm)
        if rank == args.get("stall_inside_rank", -1):
            comm.stall_next_all_reduce()
        if rank == args.get("abort_rank", -1):
            comm.abort(f"rank {rank} aborts on purpose")
            raise RuntimeError(f"rank {rank} aborted the communicator on purpose")
        losses = []
        for epoch in range(epochs):
            loss = np.zeros(trainer.state()["steps_per_epoch"])
            trainer.run_epoch(data.train.images, data.train.masks, loss)
            losses += loss.tolist()
        state = trainer.state()
        np.savez(out, params=model._native.params(), ema=trainer.ema(),
                 exp_avg=trainer.exp_avg(), loss=np.array(losses), steps=state["step"],
                 comm_seconds=state["comm_seconds"], oom_halvings=state["oom_halvings"],
                 overlapped_buckets=state["overlapped_buckets"],
                 batch_size=state["batch_size"], backend=trainer.backend(),
                 comm_backend=comm.backend, transport=conn.transport if conn else "shared memory")
    except Exception as e:
        with open(out + ".err", "w") as f:
            f.write(f"{type(e).__name__}: {e} [after {time.monotonic() - started:.1f} s]")
    finally:
        if conn is not None:
            conn.close()
