"""One rank of tests/test_ddp.py and tests/test_emu_ddp.py:
python ddp_worker.py SHM_NAME RANK WORLD OUT JSON

Trains the tiny model of tests/test_train.py with the C trainer joined to the others
through a ShmComm and saves the final weights (and EMA) to OUT (.npz). Each rank starts
from different weights (seed 100 + rank): the broadcast must make them rank 0's.
JSON: n (training images), batch, accum, top_k, epochs (2), device ("cpu", or "cuda" on
the emulated library named by CODEXT_CUDA_EMULATED), oom_step (an out of memory injected
into that global step, -1: none) on rank oom_rank only (default: every rank)."""
import json
import os
import sys

if os.environ.get("CODEXT_CUDA_EMULATED"):  # before _C opens the CUDA library
    os.environ["CODEXT_CUDA_LIBRARY"] = os.environ["CODEXT_CUDA_EMULATED"]

import numpy as np

import codext
from codext import _C
from codext.model import Model

if __name__ == "__main__":
    name, rank, world, out, args = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])
    try:
        comm = _C.ShmComm(name, rank, world, timeout=30)
        data = codext.data.synthetic(args["n"], 0, 32, seed=2)
        model = Model(backbone="edgenext_tiny_test", decoder_dim=16, num_experts=3,
                      moe_top_k=args.get("top_k", 0), img_size=32, seed=100 + rank,
                      device=args.get("device", "cpu"))
        epochs = args.get("epochs", 2)
        trainer = _C.Trainer(model._native, args["n"], 32, 32, batch_size=args["batch"],
                             accumulation_steps=args.get("accum", 1), epochs=epochs,
                             stage1_epochs=1, lr=1e-3, grad_clip=0.5, seed=11, world_size=world,
                             rank=rank)
        if args.get("oom_step", -1) >= 0 and rank == args.get("oom_rank", rank):
            trainer.inject_oom(args["oom_step"])
        trainer.set_comm(comm)
        losses = []
        for epoch in range(epochs):
            loss = np.zeros(trainer.state()["steps_per_epoch"])
            trainer.run_epoch(data.train.images, data.train.masks, loss)
            losses += loss.tolist()
        state = trainer.state()
        np.savez(out, params=model._native.params(), ema=trainer.ema(),
                 exp_avg=trainer.exp_avg(), loss=np.array(losses), steps=state["step"],
                 comm_seconds=state["comm_seconds"], oom_halvings=state["oom_halvings"],
                 batch_size=state["batch_size"], backend=trainer.backend())
    except Exception as e:
        with open(out + ".err", "w") as f:
            f.write(f"{type(e).__name__}: {e}")
