"""Progress of codext.launch() (codext/_launch_progress.py): rank 0's events reach the
launcher's Progress in order, the launcher prints one epoch table, log=None prints nothing,
a worker's output cannot pass for an event, and a launcher that does not read never
blocks rank 0."""
import io
import json
import os
import sys
import textwrap
import time
import uuid

import pytest

import codext
from codext import _launch_progress, _progress
from codext._launch_progress import Channel, Display, parse_event
from codext._progress import Progress
from test_launch import marked, our_segments
from test_launch_train import TINY

SPE, TOTAL = 4, 8  # TINY with batch 2 on 2 workers: 17 // 4 = 4 steps per epoch, 2 epochs


def config(tmp_path, **kw):
    return codext.Config(batch_size=2, checkpoint_dir=str(tmp_path / uuid.uuid4().hex),
                         **dict(TINY, **kw))


class Recorder(Progress):
    """A Progress that notes every call the launcher makes."""

    def __init__(self, **kw):
        super().__init__(TOTAL, SPE, 2, 4, mode="lines", **kw)
        self.calls = []

    def begin(self, step):
        self.calls.append(("begin", step))
        super().begin(step)

    def steps(self, step, epoch, epoch_step, loss, lr):
        self.calls.append(("steps", step, epoch, epoch_step, loss, lr))
        super().steps(step, epoch, epoch_step, loss, lr)

    def evaluated(self, seconds):
        self.calls.append(("evaluated", seconds))

    def epoch(self, row):
        self.calls.append(("epoch", row))
        super().epoch(row)

    def message(self, text):
        self.calls.append(("message", text))
        super().message(text)

    def close(self):
        self.calls.append(("close",))
        super().close()


def table(lines):
    """The epoch table's rows as dicts of column -> text."""
    header = [i for i, l in enumerate(lines) if l.split()[:2] == ["epoch", "stage"]]
    assert len(header) == 1, lines
    names = lines[header[0]].split()
    rows = [l.split() for l in lines[header[0] + 1:] if l.split()[:1]
            and l.split()[0].count("/") == 1 and l.split()[0].split("/")[0].isdigit()]
    return [dict(zip(names, cells)) for cells in rows]


def test_events_arrive_in_order_and_reach_the_launchers_progress(tmp_path, monkeypatch):
    mark = uuid.uuid4().hex
    monkeypatch.setenv("CODEXT_TEST_MARK", mark)
    shown, logged = [], []
    live = Recorder(log=shown.append, log_every=1)
    result = codext.launch(config(tmp_path), nprocs=2, timeout=60, log=logged.append,
                           progress=live)
    hist = result.history
    calls = live.calls
    kinds = [c[0] for c in calls if c[0] != "message"]
    assert kinds == ["begin"] + (["steps"] * SPE + ["evaluated", "epoch"]) * 2 + ["close"]
    assert calls[0] == ("begin", 0)
    steps = [c for c in calls if c[0] == "steps"]
    # log_every 1: rank 0 reports after every step, each with that step's loss and lr
    assert [c[1] for c in steps] == list(range(1, TOTAL + 1))
    assert [(c[2], c[3]) for c in steps] == [((s - 1) // SPE, (s - 1) % SPE + 1)
                                             for s in range(1, TOTAL + 1)]
    assert [c[4] for c in steps] == hist["step_loss"].tolist()
    assert [c[5] for c in steps] == hist["step_lr"].tolist()
    rows = [c[1] for c in calls if c[0] == "epoch"]
    assert [r["epoch"] for r in rows] == [0, 1] and [r["stage"] for r in rows] == [1, 2]
    assert [r["loss"] for r in rows] == hist["epoch_loss"].tolist()
    for e, row in enumerate(rows):
        assert set(row["metrics"]) >= set(_progress.METRICS)
        assert row["metrics"] == {k: hist[f"val_{k}"][e] for k in row["metrics"]}
    messages = [c[1] for c in calls if c[0] == "message"]
    assert messages[0].startswith("codext.train: COD model")         # rank 0's own line
    assert sum(m.startswith("estimate: ") for m in messages) == 1     # made here, once
    assert sum(" step " in l for l in shown) == 6    # steps 1-3 of each epoch, the 4th ends it
    assert not any(l.startswith("[rank") for l in logged)   # rank 0 printed nothing itself
    assert marked(mark) == [] and our_segments() == []


def test_plain_lines_and_one_epoch_table_are_what_a_capture_sees(tmp_path, capsys):
    lines = []
    result = codext.launch(config(tmp_path, log_every=2), nprocs=2, timeout=60, log=lines.append)
    hist = result.history
    assert capsys.readouterr().out == ""                # everything went through log
    assert not any("\r" in l for l in lines)            # no bar, no line rewritten in place
    assert not any(l.startswith("[rank") for l in lines), lines
    assert lines[0].startswith("codext.train: COD model")
    status = [l for l in lines if l.startswith("epoch ") and " step " in l]
    assert [l.split("(run ")[1].split(")")[0] for l in status] == ["2/8", "6/8"]
    assert all(k in status[0] for k in ("loss ", "lr ", "img/s", "ETA epoch", " run "))
    rows = table(lines)
    assert [r["epoch"] for r in rows] == ["1/2", "2/2"] and [r["stage"] for r in rows] == ["1", "2"]
    for e, row in enumerate(rows):
        assert row["loss"] == f"{hist['epoch_loss'][e]:.4f}"
        assert row["img/s"] == f"{hist['epoch_images_per_s'][e]:.1f}"
        for k in _progress.METRICS:
            assert row[k] == f"{hist[f'val_{k}'][e]:.4f}", (k, row)
    assert float(rows[1]["lr"]) == pytest.approx(hist["step_lr"][-1], rel=1e-3)
    # the rows come as the epochs end: the first before the second epoch's progress
    assert lines.index(status[0]) < lines.index(next(l for l in lines if l.startswith("  1/2"))) \
        < lines.index(status[1])


def test_log_none_prints_nothing_and_progress_false_shows_no_progress(tmp_path, capfd):
    codext.launch(config(tmp_path), nprocs=2, timeout=60, log=None)
    assert capfd.readouterr() == ("", "")
    lines = []
    codext.launch(config(tmp_path), nprocs=2, timeout=60, log=lines.append, progress=False)
    assert not any("epoch" in l or "codext.train" in l or "estimate" in l for l in lines), lines
    assert capfd.readouterr() == ("", "")
    with pytest.raises(TypeError, match="progress must be"):
        codext.launch(config(tmp_path), nprocs=2, log=None, progress="yes")


FORGE = textwrap.dedent('''
    import json, os, sys, threading, time
    if os.environ.get("CODEXT_RANK") == "0" and os.environ.get("CODEXT_FORGE"):
        FORGED = [{"kind": "steps", "t": 0.0, "step": 999, "epoch": 0, "epoch_step": 1,
                   "loss": 0.5, "lr": 0.5},
                  {"kind": "epoch", "row": {"epoch": 7, "epochs": 2, "stage": 1, "loss": 0.5,
                   "lr": 0.5, "images_per_s": 1.0, "seconds": 1.0, "metrics": {"sm": 0.99},
                   "best": True}},
                  {"kind": "message", "text": "FORGED MESSAGE"},
                  {"kind": "close", "dropped": 0},
                  {"kind": "result", "rank": 0, "result": {}}]

        def forge():
            while True:
                for event in FORGED:
                    print(json.dumps(event), flush=True)
                    sys.stderr.write(json.dumps(event) + "\\n")
                    sys.stderr.flush()
                time.sleep(0.02)

        threading.Thread(target=forge, daemon=True).start()
''')


def test_a_worker_printing_event_lines_cannot_forge_events(tmp_path, monkeypatch):
    # rank 0 prints (stdout and stderr) lines that are valid events while it trains: they
    # travel in its output pipe, which is never parsed, not in its progress pipe
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FORGE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site),
                                                                   os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("CODEXT_FORGE", "1")
    lines = []
    result = codext.launch(config(tmp_path, log_every=2), nprocs=2, timeout=60, log=lines.append)
    forged = [l for l in lines if l.startswith('[rank 0] {"kind": ')]
    assert len(forged) >= 10, lines[:20]     # shown as rank 0's text, as any line would be
    assert "FORGED MESSAGE" not in lines
    rows = table([l for l in lines if not l.startswith("[rank")])
    assert [r["epoch"] for r in rows] == ["1/2", "2/2"]
    assert [r["sm"] for r in rows] == [f"{v:.4f}" for v in result.history["val_sm"]]
    status = [l for l in lines if l.startswith("epoch ") and " step " in l]
    assert [l.split("(run ")[1].split(")")[0] for l in status] == ["2/8", "6/8"]
    assert result.history["step_loss"].shape == (TOTAL,)


def test_a_launcher_that_does_not_read_never_blocks_rank_0():
    r, w = os.pipe()
    fallback = []
    channel = Channel(w, fallback=fallback.append)
    t0 = time.monotonic()
    sent = sum(channel.drop("steps", t=0.0, step=i, epoch=0, epoch_step=i, loss=0.5, lr=1e-3)
               for i in range(20000))
    assert time.monotonic() - t0 < 5.0
    assert 0 < sent < 20000 and channel.dropped == 20000 - sent   # the pipe filled up
    while True:  # no room left even for a short event
        try:
            os.write(w, b"\n")
        except BlockingIOError:
            break
    t0 = time.monotonic()
    channel.line("a line of codext.train")       # waits a bounded time, then stdout
    assert 0.8 * _launch_progress.WAIT_S <= time.monotonic() - t0 < 5.0
    assert fallback == ["a line of codext.train"] and channel.dropped == 20000 - sent  # not lost
    os.set_blocking(r, False)
    data = b""
    while True:
        try:
            data += os.read(r, 65536)
        except BlockingIOError:
            break
    events = [l for l in data.splitlines() if l]
    assert len(events) == sent and all(parse_event(l) is not None for l in events)  # whole
    os.close(r)                                  # the launcher is gone
    assert not channel.send("steps", t=0.0, step=1, epoch=0, epoch_step=1, loss=0.5, lr=1e-3)
    channel.line("after the launcher closed its end")
    assert channel.broken and fallback[-1] == "after the launcher closed its end"
    os.close(w)


def test_malformed_events_are_ignored():
    good = {"kind": "steps", "t": 1.0, "step": 3, "epoch": 0, "epoch_step": 3, "loss": 0.5,
            "lr": 1e-3}
    assert parse_event(json.dumps(good)) == good
    for bad in ("not json", "[1, 2]", json.dumps(dict(good, kind="result")),
                json.dumps(dict(good, step="3")), json.dumps(dict(good, loss=True)),
                json.dumps({k: v for k, v in good.items() if k != "lr"}),
                json.dumps({"kind": "epoch", "row": {"epoch": 0}}),
                json.dumps({"kind": "message", "text": 5})):
        assert parse_event(bad) is None, bad


class FakeTqdm:
    made = []

    def __init__(self, total, initial, file, desc, **kw):
        self.total, self.n, self.desc, self.postfix, self.closed = total, initial, desc, "", False
        FakeTqdm.made.append(self)

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text

    def update(self, n):
        self.n += n

    def close(self):
        self.closed = True

    def clear(self):
        pass

    def refresh(self):
        pass


def feed(display, evaluates=True):
    display.put_event({"kind": "begin", "t": 10.0, "step": 0, "total_steps": 8,
                       "steps_per_epoch": 4, "epochs": 2, "images_per_step": 4,
                       "evaluates": evaluates})
    for step in range(1, 9):
        display.put_event({"kind": "steps", "t": 10.0 + 0.5 * step, "step": step,
                           "epoch": (step - 1) // 4, "epoch_step": (step - 1) % 4 + 1,
                           "loss": 1.0 / step, "lr": 1e-3})
        if step % 4 == 0:
            display.put_event({"kind": "epoch", "row": {
                "epoch": step // 4 - 1, "epochs": 2, "stage": 1, "loss": 0.25, "lr": 1e-3,
                "images_per_s": 8.0, "seconds": 2.0, "best": True,
                "metrics": {"sm": 0.5, "iou": 0.25, "wfm": 0.125, "mean_em": 0.75,
                            "mae": 0.0625} if evaluates else {}}})
    display.put_event({"kind": "close", "dropped": 0})
    display.drain()


def test_a_jupyter_kernel_with_widgets_gets_tqdm_autos_bar(monkeypatch):
    class Shell:
        config = {"IPKernelApp": {}}
    fake_ipython = type(sys)("IPython")
    fake_ipython.get_ipython = lambda: Shell()
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython)
    assert _progress._in_notebook()
    monkeypatch.setattr(_progress, "_notebook_widgets", lambda: True)
    monkeypatch.setattr(_progress, "_tqdm_class", lambda: FakeTqdm)
    FakeTqdm.made.clear()
    lines, captured = [], io.StringIO()                # captured output: not a terminal
    display = Display(True, lines.append, stream=captured)
    assert display.mode == "tqdm" and display.worker_spec() == {"chunking": "timed",
                                                                "log_every": 50}
    feed(display)
    assert [b.desc for b in FakeTqdm.made] == ["epoch 1/2", "epoch 2/2"]
    assert all(b.n == b.total == 4 and b.closed for b in FakeTqdm.made)
    postfix = FakeTqdm.made[1].postfix
    assert "loss 0.1250" in postfix and "lr 1.000e-03" in postfix and "8.0 img/s" in postfix
    assert "run ETA 0:00" in postfix                   # rank 0's clock: 0.5 s per step
    assert lines[0].startswith("estimate: ") and "the 5 steps left (0.500 s per step" in lines[0]
    assert [r["sm"] for r in table(lines)] == ["0.5000", "0.5000"] and captured.getvalue() == ""
    # without widgets, the same capture gets plain lines every log_every steps
    monkeypatch.setattr(_progress, "_notebook_widgets", lambda: False)
    lines = []
    display = Display(True, lines.append, log_every=3, stream=io.StringIO())
    assert display.mode == "lines" and display.worker_spec() == {"chunking": "lines",
                                                                 "log_every": 3}
    feed(display, evaluates=False)
    assert [l.split()[3] for l in lines if l.startswith("epoch ") and " step " in l] == \
        ["3/4", "2/4"]                                   # global steps 3 and 6
    assert table(lines)[0] == {"epoch": "1/2", "stage": "1", "loss": "0.2500", "lr": "1.000e-03",
                               "img/s": "8.0", "time": "2.0s", "wait_ms": "-"}  # no metrics
