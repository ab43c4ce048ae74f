"""Validation of a data-parallel run, sharded over its ranks and reduced exactly
(docs/distributed.md#validation).

Single-process evaluation (codext.train.evaluate) scores the test images in chunks of
`chunk` images (one codext.metrics.evaluate call each) and passes each chunk through the
model in batches of `batch_size`, so its batches are

    [c + j B, min(c + (j + 1) B, c + chunk, n))   for each chunk start c and j >= 0

(the last batch of a chunk, and of the set, may be shorter). batches() lists them.
shard_bounds() gives each rank a contiguous block of whole batches: with K batches and W
ranks, rank r gets K // W batches, and the first K % W ranks one more. A rank beyond the
K-th gets an empty block (3 test images in one batch and 2 ranks: rank 1 scores nothing).
Every image therefore goes through the model in the same batch as in one process.

Each rank scores its block with the same code as evaluate (score_range: the C forward and
the C metrics), then gather() brings the per-image scores to rank 0 as float64 bytes: the
ranks broadcast their blocks in turn (every rank knows every block's size in advance), and
rank 0 aggregates them in image order with codext.metrics.aggregate. The dataset scores
are evaluate()'s, bit for bit: the per-image numbers are the same numbers and aggregate
sums them as evaluate does.
"""
import time

import numpy as np

from . import metrics as _metrics

# the keys of codext.metrics.evaluate(..., per_image=True)["per_image"], in a row's order
SCALAR_KEYS = ("sm", "wfm", "mae", "adp_em", "adp_fm", "iou", "dice")
CURVE_KEYS = ("em_curve", "fm_curve")
CURVE_LEN = 256
ROW = len(SCALAR_KEYS) + len(CURVE_KEYS) * CURVE_LEN  # float64 per image
HEADER = 2  # a block's payload starts with: images scored, seconds taken


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def batches(n, batch_size, chunk):
    """[(start, stop)]: the batches in which evaluate passes n images through the model."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    batch_size, chunk = _positive("batch_size", batch_size), _positive("chunk", chunk)
    return [(s, min(s + batch_size, c + chunk, n))
            for c in range(0, int(n), chunk) for s in range(c, min(c + chunk, n), batch_size)]


def shard_bounds(n, world, batch_size, chunk):
    """[(lo, hi)] for ranks 0..world-1: contiguous blocks of whole batches (module
    docstring), covering [0, n) in rank order; empty blocks are (n, n)."""
    world = _positive("world", world)
    starts = batches(n, batch_size, chunk)
    per, extra = divmod(len(starts), world)
    bounds, first = [], 0
    for r in range(world):
        count = per + (1 if r < extra else 0)
        if count == 0:
            bounds.append((n, n))
            continue
        bounds.append((starts[first][0], starts[first + count - 1][1]))
        first += count
    return bounds


def _is_batch_start(lo, batch_size, chunk):
    return (lo % chunk) % batch_size == 0


def score_range(model, images, gts, lo, hi, batch_size, chunk):
    """Per-image results (a list of codext.metrics per_image dicts, in image order) of
    images[lo:hi] against gts[lo:hi], scored as evaluate scores them: lo must start one of
    evaluate's batches, and the range is cut at evaluate's chunk boundaries."""
    if not (0 <= lo <= hi <= len(images)) or (lo < hi and not _is_batch_start(lo, batch_size, chunk)):
        raise ValueError(f"[{lo}, {hi}) is not a block of whole evaluation batches of "
                         f"{len(images)} images (batch {batch_size}, chunk {chunk})")
    parts = []
    start = lo
    while start < hi:
        stop = min(hi, (start // chunk + 1) * chunk)
        part_gts = gts[start:stop]
        preds = model._predict_at(images[start:stop], [g.shape for g in part_gts], batch_size)
        parts.append(_metrics.evaluate(preds, part_gts, per_image=True)["per_image"])
        start = stop
    return parts


def pack(parts, count, seconds):
    """One block's payload: float64 [HEADER + count * ROW] (header, then a row per image)."""
    out = np.empty(HEADER + count * ROW, np.float64)
    rows = out[HEADER:].reshape(count, ROW)
    done = 0
    for part in parts:
        k = len(part["sm"])
        for i, key in enumerate(SCALAR_KEYS):
            rows[done:done + k, i] = part[key]
        for i, key in enumerate(CURVE_KEYS):
            col = len(SCALAR_KEYS) + i * CURVE_LEN
            rows[done:done + k, col:col + CURVE_LEN] = part[key]
        done += k
    out[0], out[1] = done, seconds
    return out


def unpack(rows):
    """The per_image dict of rows float64 [N, ROW] (what aggregate takes)."""
    out = {key: np.ascontiguousarray(rows[:, i]) for i, key in enumerate(SCALAR_KEYS)}
    for i, key in enumerate(CURVE_KEYS):
        col = len(SCALAR_KEYS) + i * CURVE_LEN
        out[key] = np.ascontiguousarray(rows[:, col:col + CURVE_LEN])
    return out


def gather(comm, rank, bounds, payload):
    """Every rank's block to rank 0, exactly: rank r broadcasts its payload (pack()) in
    turn, r = 0..W-1. Collective: every rank calls it with the same bounds. Returns, on
    rank 0, (rows float64 [N, ROW] in image order, [(lo, hi, seconds)] per rank); None
    elsewhere. RuntimeError when a rank scored another number of images than its block."""
    n = bounds[-1][1] if bounds else 0
    rows = np.empty((n, ROW), np.float64) if rank == 0 else None
    report = []
    for root, (lo, hi) in enumerate(bounds):
        size = HEADER + (hi - lo) * ROW
        buf = payload if root == rank else np.empty(size, np.float64)
        if buf.shape != (size,):
            raise ValueError(f"rank {rank}: a payload of {buf.size} float64 for a block of "
                             f"{hi - lo} images (expected {size})")
        comm.broadcast(buf, root)
        if rank != 0:
            continue
        if buf[0] != hi - lo:
            raise RuntimeError(f"validation: rank {root} scored {buf[0]:g} images, but its "
                               f"block [{lo}, {hi}) holds {hi - lo}")
        rows[lo:hi] = buf[HEADER:].reshape(hi - lo, ROW)
        report.append((lo, hi, float(buf[1])))
    return (rows, report) if rank == 0 else None


def evaluate_sharded(model, split, comm, rank, world, batch_size, chunk):
    """Collective: every rank scores its block of split with model (equal weights on every
    rank), rank 0 gathers and aggregates. Returns (evaluate's dict, [(lo, hi, seconds)] per
    rank) on rank 0, (None, None) elsewhere."""
    masks_full = getattr(split, "masks_full", None)
    gts = list(masks_full) if masks_full is not None else list(split.masks)
    n = len(split.images)
    if n == 0 or len(gts) != n:
        raise ValueError(f"the split has {n} images and {len(gts)} ground truths")
    bounds = shard_bounds(n, world, batch_size, chunk)
    lo, hi = bounds[rank]
    t0 = time.perf_counter()
    parts = score_range(model, split.images, gts, lo, hi, batch_size, chunk)
    payload = pack(parts, hi - lo, time.perf_counter() - t0)
    gathered = gather(comm, rank, bounds, payload)
    if gathered is None:
        return None, None
    rows, report = gathered
    return _metrics.aggregate(unpack(rows)), report


def describe(report, seconds):
    """The log line of one sharded validation (rank 0)."""
    n = report[-1][1] if report else 0
    ranks = ", ".join(f"rank {r}: {hi - lo} images [{lo}, {hi}) in {s:.2f} s" if hi > lo else
                      f"rank {r}: none" for r, (lo, hi, s) in enumerate(report))
    where = f"{len(report)} rank" + ("s" if len(report) != 1 else "")
    return f"validation: {n} test images on {where} in {seconds:.2f} s ({ranks})"
