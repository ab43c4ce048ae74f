"""Start-up cost of data-parallel training: codext.launch() against torch's mp.spawn + gloo
(informational; not a test).

    python bench/launch.py [--repeat 3]                                 # codext only
    PYTHONPATH=. $(tools/reference-python.sh) bench/launch.py           # both, same machine, same run

Both sides start 2 CPU workers and run one training step of a small EdgeNeXt model on 32x32
images, then return to the caller; the time is from the call to its return, best of
`repeat`, so it is an upper bound of "launch to the first step":
- codext: codext.launch(Config(edgenext_xx_small, 1 step per rank), nprocs=2): two fresh
  interpreters (fork + exec), the rendezvous store, the shared-memory collectives, the
  dataset shared once, weights broadcast, one step, the checkpoint and a 2-image evaluation
  written by rank 0.
- torch: torch.multiprocessing.spawn(nprocs=2) of a function that joins a gloo process group
  (env:// on 127.0.0.1), builds timm's edgenext_xx_small, wraps it in DDP, runs one SGD step
  and leaves the group. The spawned interpreters import torch and timm themselves, as a
  user's workers do.
The goal: codext in at most a third of torch's time.

Measured 2026-12-05 (2-core VM shared with other jobs, load average ~9; torch 1.13 Debian
CPU build, timm 1.0.31; best of 3):

    start-up path                                 seconds
    codext.launch, 2 CPU workers                     1.23
    torch mp.spawn + gloo + DDP, 2 workers          11.44
    codext / torch: 0.11
"""
import argparse
import os
import socket
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import codext  # noqa: E402


def codext_once(workdir):
    cfg = codext.Config(backbone="edgenext_xx_small", img_size=32, decoder_dim=16, num_experts=3,
                        batch_size=2, epochs=1, stage1_epochs=0, synthetic_train=4,
                        synthetic_test=2, amp=False, checkpoint_dir=workdir)
    t0 = time.perf_counter()
    result = codext.launch(cfg, nprocs=2, log=None)
    elapsed = time.perf_counter() - t0
    assert len(result.history["step_loss"]) == 1
    return elapsed


def _torch_rank(rank, world, port):
    import torch
    import torch.distributed as dist
    import timm
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = timm.create_model("edgenext_xx_small", pretrained=False, num_classes=1)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=1e-3)
    x = torch.randn(2, 3, 32, 32)
    loss = ddp(x).square().mean()
    loss.backward()
    opt.step()
    dist.destroy_process_group()


def torch_once():
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    mp.spawn(_torch_rank, args=(2, port), nprocs=2, join=True)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        times = [codext_once(os.path.join(tmp, f"run{r}")) for r in range(args.repeat)]
    rows.append(("codext.launch, 2 CPU workers", min(times)))
    try:
        import torch  # noqa: F401
        import timm  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    if have_torch:
        rows.append(("torch mp.spawn + gloo + DDP, 2 workers", min(torch_once() for _ in range(args.repeat))))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; best of {args.repeat}")
    print(f"{'start-up path':44s} {'seconds':>8s}")
    for name, t in rows:
        print(f"{name:44s} {t:8.2f}")
    if have_torch:
        print(f"codext / torch: {rows[0][1] / rows[1][1]:.2f}")
    else:
        print("(torch/timm not importable here: run with tools/reference-python.sh for the comparison)")


if __name__ == "__main__":
    main()
