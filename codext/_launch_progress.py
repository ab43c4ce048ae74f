"""Progress of a codext.launch() run: rank 0 sends events, the launcher draws them
(docs/distributed.md, "Progress in the notebook").

Rank 0 (worker side):
    Channel    its end of a pipe of its own (CODEXT_PROGRESS_FD), one JSON line per event,
               written without blocking: an event that does not fit in the pipe is dropped
               (steps) or, for a line of text, printed to stdout instead (never dropped);
    Sender     what codext.train's loop sees in place of a Progress: the same chunk() sizes
               as the launcher's Progress would choose, and events instead of drawing.

The launcher (parent side):
    read_events  a reader thread's loop over the pipe: each line parsed and checked;
    Display      events and the workers' output lines, queued by the reader threads and
                 drawn by the launcher's own thread through one codext._progress.Progress
                 (tqdm bar, updating line or plain lines) with the epoch table.

Events (JSON objects with "kind"):
    begin      t, step, total_steps, steps_per_epoch, epochs, images_per_step, evaluates
    steps      t, step, epoch, epoch_step, loss, lr       (after each chunk of steps)
    evaluated  seconds                                     (an evaluation took this long)
    epoch      row: see codext._progress.epoch_line        (an epoch ended)
    message    text                                        (one of codext.train's lines)
    close      dropped                                     (events this rank had to drop)
t is rank 0's monotonic clock: the launcher's Progress measures images/s and ETAs with it,
so they are rank 0's rates whenever the events arrive (two steps events read in one go do
not make an absurd rate).

The workers' stdout and stderr are another pipe; nothing printed there is ever read as an
event, so a line that looks like one stays a line.
"""
import io
import json
import numbers
import os
import queue
import select
import sys
import time

from . import _progress

ENV_FD = "CODEXT_PROGRESS_FD"
KINDS = ("begin", "steps", "evaluated", "epoch", "message", "close")
WAIT_S = 0.5  # how long a line of text, begin, epoch or close waits for room in a full pipe
# a write of at most PIPE_BUF bytes to a pipe is all or nothing, even without blocking
MAX_EVENT = getattr(select, "PIPE_BUF", 512)


def _print(text):
    print(text, flush=True)


# ---- rank 0 ------------------------------------------------------------------------------------

class Channel:
    """Rank 0's end of the progress pipe. send() never blocks longer than `wait`."""

    def __init__(self, fd, fallback=_print):
        self.fd, self.fallback = fd, fallback
        os.set_blocking(fd, False)
        self.dropped = 0
        self.broken = False  # the launcher closed its end: nothing more is sent

    def send(self, kind, wait=0.0, **fields):
        """True when the event went whole into the pipe; False when it did not: the pipe
        stayed full for `wait` seconds, is closed, or the event is longer than one atomic
        write (the caller counts it as dropped or prints its text)."""
        data = (json.dumps(dict(kind=kind, **fields)) + "\n").encode()
        if self.broken or len(data) > MAX_EVENT:
            return False
        poller = None
        while True:
            try:
                os.write(self.fd, data)
                return True
            except BlockingIOError:
                if wait <= 0:
                    break
                if poller is None:
                    poller = select.poll()
                    poller.register(self.fd, select.POLLOUT)
                poller.poll(wait * 1000)
                wait = 0.0  # one more try after the wait, then give up
            except OSError:  # EPIPE: the launcher is gone or closed its end
                self.broken = True
                break
        return False

    def drop(self, kind, wait=0.0, **fields):
        """send(), counting the event as dropped when it could not be sent."""
        if self.send(kind, wait, **fields):
            return True
        self.dropped += 1
        return False

    def line(self, text):
        """One of codext.train's lines: a message event, or stdout when it cannot be sent."""
        if not self.send("message", wait=WAIT_S, text=str(text)):
            self.fallback(text)


class Sender:
    """Rank 0's stand-in for a Progress (the calls codext.train makes), sending events.
    spec: {"chunking": "lines" | "timed", "log_every": n} from the launcher, so that the
    chunks end where the launcher's Progress reports (multiples of log_every for plain
    lines, about every REFRESH_S otherwise)."""

    def __init__(self, channel, spec, *, total_steps, steps_per_epoch, epochs, images_per_step,
                 evaluates):
        mode = "lines" if spec.get("chunking") == "lines" else "off"
        # counts steps and times them, draws nothing: chunk() sizes only
        self.shadow = _progress.Progress(total_steps, steps_per_epoch, epochs, images_per_step,
                                         log=None, log_every=spec.get("log_every", 50),
                                         stream=io.StringIO(), mode=mode)
        self.channel, self.epochs = channel, int(epochs)
        self.counts = dict(total_steps=int(total_steps), steps_per_epoch=int(steps_per_epoch),
                           epochs=int(epochs), images_per_step=int(images_per_step),
                           evaluates=bool(evaluates))

    def begin(self, step):
        self.shadow.begin(step)
        self.channel.drop("begin", wait=WAIT_S, t=time.monotonic(), step=int(step), **self.counts)

    def chunk(self):
        return self.shadow.chunk()

    def steps(self, step, epoch, epoch_step, loss, lr):
        self.shadow.steps(step, epoch, epoch_step, loss, lr)
        self.channel.drop("steps", t=time.monotonic(), step=int(step), epoch=int(epoch),
                          epoch_step=int(epoch_step), loss=float(loss), lr=float(lr))

    def evaluated(self, seconds):
        self.channel.drop("evaluated", seconds=float(seconds))

    def epoch(self, row):
        if not self.channel.send("epoch", wait=WAIT_S, row=row):
            self.channel.fallback(_progress.epoch_line(row, self.epochs))

    def message(self, text):
        self.channel.line(text)

    def close(self):
        self.channel.send("close", wait=WAIT_S, dropped=self.channel.dropped)


def worker_progress(spec, rank):
    """(progress, log) for codext.train's loop in a worker: rank 0 with a progress pipe gets
    a Sender factory and sends its lines as events; without a spec (launch(progress=False
    or log=None)) nothing is shown."""
    fd = os.environ.get(ENV_FD)
    if spec is None:
        return False, _print
    if rank != 0 or not fd:
        return True, _print
    channel = Channel(int(fd))
    return (lambda **counts: Sender(channel, spec, **counts)), channel.line


# ---- the launcher ------------------------------------------------------------------------------

def _number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _count(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


_FIELDS = {  # kind -> {field: check}
    "begin": dict(t=_number, step=_count, total_steps=_count, steps_per_epoch=_count,
                  epochs=_count, images_per_step=_count, evaluates=lambda v: isinstance(v, bool)),
    "steps": dict(t=_number, step=_count, epoch=_count, epoch_step=_count, loss=_number,
                  lr=_number),
    "evaluated": dict(seconds=_number),
    "epoch": dict(row=lambda v: isinstance(v, dict)),
    "message": dict(text=lambda v: isinstance(v, str)),
    "close": dict(dropped=_count),
}
_ROW = dict(epoch=_count, epochs=_count, stage=_count, loss=_number, lr=_number,
            images_per_s=_number, seconds=_number, best=lambda v: isinstance(v, bool),
            metrics=lambda m: isinstance(m, dict) and all(
                isinstance(k, str) and _number(v) for k, v in m.items()))


def parse_event(raw):
    """The event in one line of the progress pipe, or None when it is not a valid one."""
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("kind") not in KINDS:
        return None
    checks = _FIELDS[event["kind"]]
    if not all(name in event and ok(event[name]) for name, ok in checks.items()):
        return None
    if event["kind"] == "epoch" and not all(n in event["row"] and ok(event["row"][n])
                                            for n, ok in _ROW.items()):
        return None
    return event


def event_line(event):
    """The line codext.train would have printed for a message or epoch event, else None."""
    if event["kind"] == "message":
        return event["text"]
    if event["kind"] == "epoch":
        return _progress.epoch_line(event["row"], event["row"]["epochs"])
    return None


def read_events(fd, on_event):
    """Reads the progress pipe until rank 0 closes it; on_event(event) for each valid one."""
    with os.fdopen(fd, "rb") as f:
        for raw in f:
            event = parse_event(raw)
            if event is not None:
                on_event(event)


class Display:
    """What the launcher shows. progress: True (a Progress of this module's making, created
    at the begin event, with the epoch table), False or None (none), or a
    codext._progress.Progress that receives the events. log: the launcher's log (None: no
    Progress of our own, and no lines). The reader threads put(); the launcher's thread
    drain()s, so that drawing and printing happen in one thread, in arrival order."""

    def __init__(self, progress, log, log_every=50, stream=None):
        if not (isinstance(progress, (bool, _progress.Progress)) or progress is None):
            raise TypeError(f"progress must be True, False or a codext._progress.Progress, got "
                            f"{type(progress).__name__}")
        self.log, self.queue = log, queue.SimpleQueue()
        self.stream = stream if stream is not None else sys.stdout
        self.live = progress if isinstance(progress, _progress.Progress) else None
        self.own = progress is True and log is not None
        self.mode = self.live.mode if self.live is not None else (
            _progress.auto_mode(self.stream) if self.own else None)
        self.log_every = self.live.log_every if self.live is not None else int(log_every)
        self.dropped = 0
        self.now = 0.0  # rank 0's clock at its latest timed event: our Progress's clock
        self.closed = False

    def worker_spec(self):
        """What rank 0 needs to know (None: send nothing, print nothing)."""
        if self.mode is None:
            return None
        return {"chunking": "lines" if self.mode == "lines" else "timed",
                "log_every": self.log_every}

    def put_line(self, rank, text):
        self.queue.put(("line", f"[rank {rank}] {text}"))

    def put_event(self, event):
        self.queue.put(("event", event))

    def drain(self):
        while True:
            try:
                what, item = self.queue.get_nowait()
            except queue.Empty:
                return
            if what == "line":
                self._line(item, worker=True)
            else:
                self._event(item)

    def close(self, quiet=False):
        """Shows what is left, then clears the bar. quiet: errors of log are ignored (the
        run is failing with an error of its own)."""
        try:
            self.drain()
            if self.live is not None and not self.closed:  # rank 0 failed before its close
                self.live.close()
                self.closed = True
        except Exception:
            if not quiet:
                raise

    def _line(self, text, worker=False):
        # our Progress prints its lines through log, clearing its bar first; a user's
        # Progress gets codext.train's lines, the launcher's log the workers' own
        if self.live is not None and (self.own or not worker):
            self.live.message(text)
        elif self.log is not None:
            self.log(text)

    def _event(self, e):
        kind = e["kind"]
        if "t" in e:
            self.now = float(e["t"])
        if kind == "message":
            self._line(e["text"])
        elif kind == "begin":
            if self.live is None and self.own:
                self.live = _progress.Progress(
                    e["total_steps"], e["steps_per_epoch"], e["epochs"], e["images_per_step"],
                    log=self.log, log_every=self.log_every, stream=self.stream, mode=self.mode,
                    clock=lambda: self.now, table=True,
                    table_metrics=_progress.METRICS if e["evaluates"] else ())
            if self.live is not None:
                self.live.begin(e["step"])
        elif self.live is None:  # begin was dropped: the epochs' lines still show
            if kind == "epoch" and self.log is not None:
                self.log(_progress.epoch_line(e["row"], e["row"]["epochs"]))
        elif kind == "steps":
            self.live.steps(e["step"], e["epoch"], e["epoch_step"], e["loss"], e["lr"])
        elif kind == "evaluated":
            self.live.evaluated(e["seconds"])
        elif kind == "epoch":
            self.live.epoch(e["row"])
        elif kind == "close":
            self.live.close()
            self.closed = True
            self.dropped = e["dropped"]
            if self.dropped and self.own:
                self.log(f"({self.dropped} progress events were dropped: the launcher did not "
                         f"read them in time)")
