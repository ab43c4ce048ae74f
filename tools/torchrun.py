#!/usr/bin/env python3
"""Runs PyTorch's own torchrun (torch.distributed.run) with whatever arguments it is given,
for checking codext's `--use-ddp` ranks under the real launcher (its elastic agent, its
store on MASTER_PORT, its environment), not a simulation of it:

    PY=$(tools/reference-python.sh)
    PYTHONPATH=. $PY tools/torchrun.py --nproc_per_node=2 --no_python \\
        python3 -m codext train --use-ddp --synthetic-train 9 ...

`--no_python` makes the agent start the given command as it is, so the workers run in the
Python that has codext built, not in the one that has torch. Debian 12's torch 1.13 under
Python 3.11 cannot parse its own --redirects/--tee defaults (its Std.from_str compares an
enum Flag with an int, which Python 3.11 no longer equates): that one function is
replaced here before torchrun's main runs; nothing else is changed.
"""
import sys

from torch.distributed.elastic.multiprocessing import api


def _std_from_str(cls, text):
    if ":" in text:
        return {int(rank): cls(int(value)) for rank, value in
                (item.split(":") for item in text.split(","))}
    return cls(int(text))


if __name__ == "__main__":
    api.Std.from_str = classmethod(_std_from_str)
    from torch.distributed.run import main
    sys.exit(main())
