"""Validation sharded over the ranks of codext.launch (codext/_sharded_eval.py): each rank
scores a block of whole evaluation batches, rank 0 gathers the per-image scores as bytes
and aggregates them; the result equals a single-process codext.train.evaluate."""
import importlib
import itertools
import re
import threading
import uuid

import numpy as np
import pytest

import codext
from codext import _C
from codext import _sharded_eval as se
from test_launch import marked, our_segments
from test_launch_train import TINY

train_module = importlib.import_module("codext.train")  # codext.train may be the function
REL = 1e-12


# ---- the block boundaries ------------------------------------------------------------------

def test_batches_are_the_ones_evaluate_forms():
    assert se.batches(5, 2, 64) == [(0, 2), (2, 4), (4, 5)]
    assert se.batches(0, 16, 64) == []
    # a chunk that is no multiple of the batch ends with a short batch of its own
    assert se.batches(10, 4, 6) == [(0, 4), (4, 6), (6, 10)]
    assert se.batches(130, 16, 64)[3:6] == [(48, 64), (64, 80), (80, 96)]
    assert se.batches(130, 16, 64)[-1] == (128, 130)


def test_shard_bounds_edge_cases():
    assert se.shard_bounds(5, 1, 2, 64) == [(0, 5)]
    assert se.shard_bounds(5, 2, 2, 64) == [(0, 4), (4, 5)]          # 3 batches: 2 + 1
    assert se.shard_bounds(5, 3, 2, 64) == [(0, 2), (2, 4), (4, 5)]
    assert se.shard_bounds(5, 4, 2, 64) == [(0, 2), (2, 4), (4, 5), (5, 5)]
    assert se.shard_bounds(3, 4, 2, 64) == [(0, 2), (2, 3), (3, 3), (3, 3)]
    assert se.shard_bounds(3, 2, 16, 64) == [(0, 3), (3, 3)]        # one batch: rank 1 idle
    assert se.shard_bounds(4, 2, 2, 64) == [(0, 2), (2, 4)]
    assert se.shard_bounds(0, 3, 2, 64) == [(0, 0)] * 3
    assert se.shard_bounds(37, 2, 16, 64) == [(0, 32), (32, 37)]
    assert se.shard_bounds(10, 2, 4, 6) == [(0, 6), (6, 10)]        # cut at the chunk's batch
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError):
            se.shard_bounds(5, bad, 2, 64)
        with pytest.raises(ValueError):
            se.shard_bounds(5, 2, bad, 64)
    with pytest.raises(ValueError):
        se.shard_bounds(-1, 2, 2, 64)


@pytest.mark.parametrize("chunk", [3, 4, 8, 64])
def test_shard_bounds_cut_only_between_batches_and_balance_them(chunk):
    for n, batch, world in itertools.product(range(0, 41), range(1, 8), range(1, 6)):
        batches = se.batches(n, batch, chunk)
        bounds = se.shard_bounds(n, world, batch, chunk)
        assert len(bounds) == world
        # contiguous, in rank order, covering [0, n) once
        assert [i for lo, hi in bounds for i in range(lo, hi)] == list(range(n))
        assert all(lo <= hi for lo, hi in bounds)
        # every block is whole batches; the counts differ by at most one, larger first
        counts = [sum(1 for b in batches if lo <= b[0] and b[1] <= hi and hi > lo) for lo, hi in bounds]
        assert sum(counts) == len(batches)
        assert counts == sorted(counts, reverse=True) and counts[0] - counts[-1] <= 1
        cuts = {b[0] for b in batches} | {n}
        assert all(lo in cuts and hi in cuts for lo, hi in bounds)


# ---- the blocks, scored apart, give evaluate's bits -------------------------------------------

def _tiny_model(seed=5):
    return codext.Model(backbone="edgenext_tiny_test", img_size=32, decoder_dim=16,
                        num_experts=3, seed=seed)


def _assert_same(a, b, rel=0.0):
    assert sorted(a) == sorted(b)
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert np.array_equal(a[k], b[k]), k
        elif rel == 0.0:
            assert a[k] == b[k], k
        else:
            assert a[k] == pytest.approx(b[k], rel=rel, abs=0), k


@pytest.mark.parametrize("batch, chunk", [(2, 64), (16, 64), (4, 6)])
def test_blocks_scored_apart_and_packed_aggregate_to_evaluate(monkeypatch, batch, chunk):
    model = _tiny_model()
    split = codext.data.synthetic(0, 19, 32, seed=4).test
    sizes = [(32 + 3 * i, 40 - i) for i in range(19)]  # GTs at sizes of their own
    split.masks_full = [codext.data.resize_mask(m, s) for m, s in zip(split.masks, sizes)]
    monkeypatch.setattr(train_module, "_METRIC_CHUNK", chunk)
    ref = train_module.evaluate(model, split, batch_size=batch)
    gts = list(split.masks_full)
    for world in (1, 2, 3, 5):
        rows = []
        for lo, hi in se.shard_bounds(len(gts), world, batch, chunk):
            parts = se.score_range(model, split.images, gts, lo, hi, batch, chunk)
            payload = se.pack(parts, hi - lo, 0.0)
            assert payload[0] == hi - lo
            rows.append(payload[se.HEADER:].reshape(hi - lo, se.ROW))
        _assert_same(codext.metrics.aggregate(se.unpack(np.concatenate(rows))), ref)
    # a block that does not start a batch would put images in other batches: refused
    with pytest.raises(ValueError, match="whole evaluation batches"):
        se.score_range(model, split.images, gts, 1, 5, 2, 64)


class _ThreadComm:
    """broadcast(buf, root) between threads: what _C.ShmComm does between processes."""

    def __init__(self, world):
        self.barrier = threading.Barrier(world, timeout=20)
        self.slot = None
        self.calls = [0] * world

    def rank(self, r):
        outer = self

        class Rank:
            def broadcast(self, buf, root):
                outer.calls[r] += 1
                if r == root:
                    outer.slot = buf.copy()
                outer.barrier.wait()
                if r != root:
                    assert buf.shape == outer.slot.shape
                    buf[:] = outer.slot
                outer.barrier.wait()
        return Rank()


def _run_gather(world, bounds, payload_of):
    comm, out, errors = _ThreadComm(world), {}, []

    def rank(r):
        try:
            out[r] = se.gather(comm.rank(r), r, bounds, payload_of(r))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            comm.barrier.abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out, errors, comm


def test_gather_brings_every_block_to_rank_0_byte_for_byte():
    rng = np.random.default_rng(0)
    n, world = 7, 4
    bounds = [(0, 4), (4, 6), (6, 7), (7, 7)]
    rows = rng.standard_normal((n, se.ROW))
    rows[0, 0] = np.nextafter(1.0, 2.0)  # float32 would lose this
    payload = lambda r: np.concatenate(([bounds[r][1] - bounds[r][0], 0.1 * r],  # noqa: E731
                                        rows[bounds[r][0]:bounds[r][1]].ravel()))
    out, errors, comm = _run_gather(world, bounds, payload)
    assert errors == []
    got, report = out[0]
    assert got.tobytes() == rows.tobytes()
    assert report == [(0, 4, 0.0), (4, 6, 0.1), (6, 7, 0.2), (7, 7, 0.30000000000000004)]
    assert all(out[r] is None for r in range(1, world))
    assert comm.calls == [world] * world  # a rank without images still takes part


def test_gather_refuses_a_block_scored_short():
    bounds = [(0, 2), (2, 4)]
    payload = lambda r: np.concatenate(([2 if r == 0 else 1, 0.0], np.zeros(2 * se.ROW)))  # noqa: E731
    out, errors, _ = _run_gather(2, bounds, payload)
    assert any(isinstance(e, RuntimeError) and "rank 1 scored 1 images" in str(e) for e in errors)


# ---- two launched workers ------------------------------------------------------------------

def _ema_of_state(path, config):
    """A Model holding the EMA weights saved in a state file (last.state.step<N>)."""
    tensors, _, _ = _C.safetensors_load(path)
    model = codext.Model(config)
    model.load_state_dict({k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")},
                          strict=True)
    return model


def _launch(tmp_path, monkeypatch, **kw):
    mark = uuid.uuid4().hex
    monkeypatch.setenv("CODEXT_TEST_MARK", mark)
    lines = []
    cfg = codext.Config(batch_size=2, checkpoint_dir=str(tmp_path / "ddp"), **dict(TINY, **kw))
    result = codext.launch(cfg, nprocs=2, timeout=60, log=lines.append)
    assert marked(mark) == [] and our_segments() == []
    data = codext.data.synthetic(cfg.synthetic_train, cfg.synthetic_test, cfg.img_size, cfg.seed)
    state = [p for p in (tmp_path / "ddp").iterdir() if p.name.startswith("last.state.step")]
    assert len(state) == 1
    return cfg, result, lines, data.test, _ema_of_state(str(state[0]), cfg)


def _check_row(result, epoch, expected):
    for k, v in expected.items():
        if np.isscalar(v) and k != "n_images":
            assert result.history[f"val_{k}"][epoch] == pytest.approx(v, rel=REL, abs=0), k


def _validation_line(lines):
    found = [l for l in lines if l.startswith("validation: ")]
    assert len(found) == 1, lines  # once per run
    return found[0]


def test_two_workers_validate_like_one_process(tmp_path, monkeypatch):
    # 37 test images in batches of 16: 3 batches, rank 0 scores two (32 images), rank 1 one
    cfg, result, lines, test, last_ema = _launch(tmp_path, monkeypatch, synthetic_test=37)
    line = _validation_line(lines)
    assert re.search(r"37 test images on 2 ranks .*rank 0: 32 images \[0, 32\) in [\d.]+ s, "
                     r"rank 1: 5 images \[32, 37\) in [\d.]+ s", line), line
    assert np.isfinite(result.history["val_sm"]).all()
    best = codext.load(result.best_checkpoint)                      # the best epoch's EMA
    best_epoch = int(np.argmax(result.history["val_sm"]))
    single_best = train_module.evaluate(best, test)
    _check_row(result, best_epoch, single_best)
    _assert_same(result.metrics, {k: v for k, v in single_best.items() if np.isscalar(v)}, rel=REL)
    _check_row(result, cfg.epochs - 1, train_module.evaluate(last_ema, test))  # the last EMA


def test_a_rank_without_images_and_skipped_epochs(tmp_path, monkeypatch):
    # 3 test images make one batch: rank 1 scores none; eval_every 2 skips epoch 1 on both
    cfg, result, lines, test, last_ema = _launch(tmp_path, monkeypatch, synthetic_test=3,
                                                 epochs=3, eval_every=2)
    assert re.search(r"3 test images on 2 ranks .*rank 0: 3 images \[0, 3\) in [\d.]+ s, "
                     r"rank 1: none\)", _validation_line(lines))
    sm = result.history["val_sm"]
    assert np.isnan(sm[0]) and np.isfinite(sm[1:]).all()
    _check_row(result, 2, train_module.evaluate(last_ema, test))
