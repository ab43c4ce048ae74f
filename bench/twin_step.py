"""The PyTorch twin's training step (tools/cod_twin.py: timm's EdgeNeXt + our neck and
decoder in torch), as a PyTorch user would run it: AMP (autocast + GradScaler in fp16, or
bf16 without a scaler), channels_last, AdamW, optionally torch.compile. Prints one JSON
line: ms per step, images/s, peak memory (torch's allocator, and the device's use at the
end as cudaMemGetInfo sees it, the CUDA context included, comparable with codext's).

Needs torch and timm (tools/reference-python.sh prints such a Python); run by
bench/train_step.py --twin in a process of its own, or by hand:

    python bench/twin_step.py --backbone edgenext_base --img-size 352 --batch 32 --amp fp16
"""
import argparse
import contextlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="edgenext_xx_small")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--decoder-dim", type=int, default=32)
    parser.add_argument("--experts", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps per round")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds (the best counts)")
    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    parser.add_argument("--amp", choices=["fp32", "fp16", "bf16"], default="fp16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = parser.parse_args()

    import torch

    import cod_twin

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = cod_twin.CODModel(args.backbone, decoder_dim=args.decoder_dim,
                              num_experts=args.experts).to(device)
    model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if args.compile else model
    fused = {"fused": True} if device.type == "cuda" else {}  # older torch: no fused on CPU
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4, **fused)
    # fp16 needs a scaler (on the GPU); bf16 and fp32 do not
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp == "fp16" and device.type == "cuda")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.amp]
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(args.batch, 1, args.img_size, args.img_size, device=device) > 0.5).float()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with (torch.autocast(device.type, dtype=dtype) if args.amp != "fp32"
              else contextlib.nullcontext()):
            out = step_model(x)
            loss, _ = cod_twin.cod_loss(out, y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        scaler.step(optimizer)
        scaler.update()
        return loss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):  # warm-up: cuDNN autotuning, compilation
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    best = float("inf")
    for _ in range(args.rounds):
        began = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        sync()
        best = min(best, (time.perf_counter() - began) / args.steps)
    if not torch.isfinite(loss):
        raise RuntimeError(f"the twin's loss is not finite: {loss.item()}")
    result = {"ms_per_step": best * 1e3, "images_per_s": args.batch / best,
              "precision": args.amp, "compiled": bool(args.compile), "torch": torch.__version__}
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info()
        result.update(peak_allocated_bytes=torch.cuda.max_memory_allocated(),
                      device_used_bytes=total - free, gpu=torch.cuda.get_device_name())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
