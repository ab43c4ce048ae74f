#!/usr/bin/env python3
"""Data-parallel training from a shell, with the seed's flags:

    python launch_ddp.py --dataset-path /data/COD10K-v3 --batch-size 16 --epochs 150 ...

The same as `python -m codext train --use-ddp [flags]`: codext.launch() starts the workers
(one per visible GPU; CPU workers where there is none, --nprocs of them, default 1),
supervises them and prints rank 0's progress. Under torchrun or srun (RANK/WORLD_SIZE or
SLURM_* in the environment) this process trains as the rank it was given instead.
Every flag of `python -m codext train --help` works here.
"""
import sys

from codext.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "-h" not in argv and "--help" not in argv and "--use-ddp" not in argv:
        argv = ["--use-ddp"] + argv
    sys.exit(main(["train"] + argv))
