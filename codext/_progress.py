"""Live progress of a training run, driven by events (codext.train; the notebook launcher
can feed the same events).

    live = Progress(total_steps=1024, steps_per_epoch=64, epochs=16, images_per_step=16,
                    log=print, log_every=10)
    live.begin(step=0)                                   # where this process starts stepping
    while ...:
        n = live.chunk()                                 # steps to run before the next report
        ...run n optimizer steps...
        live.steps(step, epoch, epoch_step, loss, lr)    # after them
    live.evaluated(seconds)                              # an evaluation took this long
    live.epoch(row)                                      # an epoch ended (see epoch_line)
    live.message("a note")                               # a line that stays
    live.close()

What is shown (mode "auto"): tqdm.auto's bar per epoch when tqdm is importable and either
the stream is a terminal or this is a Jupyter kernel with ipywidgets (the notebook
widget); else one plain line rewritten in place on a terminal; else (a file, a pipe, a
notebook without widgets) a plain line through `log` every `log_every` optimizer steps.
Each shows the epoch and its step, the global step, the latest step loss and head lr,
images/s, and the ETA of the epoch and of the run (the run's includes the evaluations
still to come, at the duration of the last one). Once, after the first few steps, a line
says how long the run will take.

The trainer runs chunk() steps in C between two reports, so Python is called about twice a
second on a terminal and once per `log_every` steps otherwise, never once per step
(bench/progress.py measures the cost).

An ended epoch is one line (epoch_line: codext.train's format) or, with table=True, one row
of a table whose header comes before the first row (the codext.launch parent's format).
"""
import importlib.util
import shutil
import sys
import time

__all__ = ["Progress", "format_seconds", "about", "epoch_line", "METRICS"]

METRICS = ("sm", "iou", "wfm", "mean_em", "mae")  # the validation metrics an epoch shows

REFRESH_S = 0.5          # a terminal's line or bar is redrawn about this often
ESTIMATE_AFTER_STEPS = 3  # the one-off time estimate comes after this many steps


def format_seconds(s):
    """3725 -> '1:02:05', 65 -> '1:05', NaN/None -> '?'."""
    if s is None or s != s or s == float("inf"):
        return "?"
    s = int(round(max(0.0, s)))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def about(s):
    """A duration in words: 'about 40 s', 'about 3.5 min', 'about 2.1 h'."""
    if s < 90:
        return f"about {max(1, round(s))} s"
    if s < 90 * 60:
        return f"about {s / 60:.1f} min"
    return f"about {s / 3600:.1f} h"


def _is_terminal(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _columns():
    return shutil.get_terminal_size((120, 24)).columns


def _tqdm_class():
    """tqdm.auto's class (the notebook widget in a Jupyter kernel with ipywidgets), or None."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def _in_notebook():
    """True inside a Jupyter kernel (ipykernel), where stdout is no terminal."""
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:  # an IPython without a shell, or one that is half torn down
        return False


def _notebook_widgets():
    """True in a Jupyter kernel that can show ipywidgets (tqdm.auto's notebook bar)."""
    return _in_notebook() and importlib.util.find_spec("ipywidgets") is not None


def auto_mode(stream):
    """The mode "auto" stands for on `stream`: tqdm, line or lines."""
    # ipywidgets first: without it tqdm.auto warns in a kernel and draws no widget
    if _notebook_widgets() and _tqdm_class() is not None:
        return "tqdm"
    if not _is_terminal(stream):
        return "lines"
    return "tqdm" if _tqdm_class() is not None else "line"


def _time_text(seconds):
    return f"{seconds:.1f}s" if seconds < 60 else format_seconds(seconds)


def epoch_line(row, epochs):
    """One line for an ended epoch. row: {"epoch" (0-based), "stage", "loss" (the epoch's
    mean), "lr" (head lr of its last step), "images_per_s", "seconds", "metrics" (validation
    scores, empty when not evaluated), "best" (the best epoch so far), and optionally
    "data_wait_ms" (the mean time a step waited for its batches: about 0 while the
    prefetch keeps up)}."""
    line = (f"epoch {row['epoch'] + 1}/{epochs} stage {row['stage']} loss {row['loss']:.4f} "
            f"lr {row['lr']:.3e} {row['images_per_s']:.1f} img/s {row['seconds']:.1f}s")
    if row.get("data_wait_ms") is not None:
        line += f" data wait {row['data_wait_ms']:.1f} ms/step"
    metrics = row.get("metrics") or {}
    if metrics:
        line += " | " + " ".join(f"{k} {metrics[k]:.4f}" for k in METRICS if k in metrics)
        if row.get("best"):
            line += " *"
    return line


def _table_columns(epochs, metrics):
    return ([("epoch", max(5, 2 * len(str(epochs)) + 1)), ("stage", 5), ("loss", 8),
             ("lr", 9), ("img/s", 8), ("time", 7), ("wait_ms", 7)] +
            [(m, max(7, len(m))) for m in metrics])


def table_header(epochs, metrics=METRICS):
    return "  ".join(name.rjust(width) for name, width in _table_columns(epochs, metrics))


def table_row(row, epochs, metrics=METRICS):
    """The epoch table's row for `row` (see epoch_line): "-" for metrics not evaluated, "*"
    after the best epoch so far."""
    scores = row.get("metrics") or {}
    cells = [f"{row['epoch'] + 1}/{epochs}", str(row["stage"]), f"{row['loss']:.4f}",
             f"{row['lr']:.3e}", f"{row['images_per_s']:.1f}", _time_text(row["seconds"]),
             "-" if row.get("data_wait_ms") is None else f"{row['data_wait_ms']:.1f}"]
    cells += [f"{scores[m]:.4f}" if m in scores else "-" for m in metrics]
    widths = [width for _, width in _table_columns(epochs, metrics)]
    text = "  ".join(cell.rjust(width) for cell, width in zip(cells, widths))
    return text + (" *" if scores and row.get("best") else "")


class Progress:
    """See the module docstring. mode: "auto", "tqdm", "line" (rewritten in place),
    "lines" (periodic lines through log) or "off" (only message() and epoch() lines).
    table: epoch() prints rows of a table with columns for `table_metrics` instead of
    epoch_line's lines. clock: a monotonic time source (tests pass a fake one)."""

    def __init__(self, total_steps, steps_per_epoch, epochs, images_per_step, *, log=print,
                 log_every=50, stream=None, mode="auto", clock=time.monotonic, table=False,
                 table_metrics=METRICS):
        self.total_steps, self.steps_per_epoch = int(total_steps), int(steps_per_epoch)
        self.epochs, self.images_per_step = int(epochs), int(images_per_step)
        self.log, self.log_every = log, max(1, int(log_every))
        self.stream = stream if stream is not None else sys.stdout
        self.clock = clock
        self.table, self.table_metrics = bool(table), tuple(table_metrics)
        self._table_started = False
        if mode == "auto":
            mode = auto_mode(self.stream)
        if mode not in ("tqdm", "line", "lines", "off"):
            raise ValueError(f"mode must be auto, tqdm, line, lines or off, got {mode!r}")
        self.mode = mode
        self._bar = None          # tqdm: the current epoch's bar
        self._bar_epoch = None
        self._line_shown = False  # line: something to clear before a message
        self._width = 0           # line: length of the text shown
        self._t0 = self._step0 = None
        self._step = 0
        self._eval_s = None
        self._estimated = False
        self._last_report = None

    # ---- events --------------------------------------------------------------------

    def begin(self, step):
        """The run is at global step `step` and starts stepping now."""
        self._t0, self._step0, self._step = self.clock(), int(step), int(step)
        self._last_report = self._t0

    def chunk(self):
        """Optimizer steps to run before the next report (>= 1)."""
        if not self._estimated and self._step0 is not None:  # the estimate comes early
            first = self._step0 + ESTIMATE_AFTER_STEPS - self._step
            if first > 0:
                return min(first, self._chunk())
        return self._chunk()

    def _chunk(self):
        if self.mode == "lines":
            return self.log_every - self._step % self.log_every
        rate = self.seconds_per_step()
        if rate is None or rate <= 0:
            return 1
        return max(1, int(REFRESH_S / rate))

    def steps(self, step, epoch, epoch_step, loss, lr):
        """Reports the position after a chunk: global `step` done, `epoch_step` of epoch
        `epoch` (0-based) done, the latest step's loss and head lr."""
        if self._t0 is None:
            self.begin(step)
        self._step = int(step)
        now = self.clock()
        if not self._estimated and self._step - self._step0 >= ESTIMATE_AFTER_STEPS:
            self._estimated = True
            if self._step < self.total_steps:
                self.message(self.estimate_text())
        if self.mode == "lines":
            if step % self.log_every == 0 and epoch_step < self.steps_per_epoch and self.log:
                self.log(self.status_text(epoch, epoch_step, loss, lr))
        elif self.mode == "line":
            # one screen line: a wrapped line could not be rewritten in place
            text = self.status_text(epoch, epoch_step, loss, lr)[:_columns() - 1]
            pad = max(0, self._width - len(text))
            self._width = len(text)
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
            self._line_shown = True
        elif self.mode == "tqdm":
            self._tqdm_update(epoch, epoch_step, loss, lr)
        self._last_report = now

    def evaluated(self, seconds):
        """An evaluation took `seconds`: the run's ETA counts one per epoch left."""
        self._eval_s = float(seconds)

    def epoch(self, row):
        """An epoch ended (row: see epoch_line): its line, or its row of the table."""
        if not self.table:
            self.message(epoch_line(row, self.epochs))
            return
        if not self._table_started:
            self._table_started = True
            self.message(table_header(self.epochs, self.table_metrics))
        self.message(table_row(row, self.epochs, self.table_metrics))

    def message(self, text):
        """A line that stays (epoch summaries, notes): the live line is cleared first (a
        tqdm bar of an unfinished epoch is redrawn below it)."""
        bar = self._bar if self._bar is not None and self._bar.n < self._bar.total else None
        if bar is not None:
            bar.clear()
        else:
            self._clear()
        if self.log is not None:
            self.log(text)
        if bar is not None:
            bar.refresh()

    def close(self):
        self._clear()

    # ---- numbers -------------------------------------------------------------------

    def seconds_per_step(self):
        """Mean seconds per optimizer step in this process so far, or None."""
        if self._t0 is None or self._step <= self._step0:
            return None
        return (self.clock() - self._t0) / (self._step - self._step0)

    def images_per_second(self):
        rate = self.seconds_per_step()
        return self.images_per_step / rate if rate else None

    def eta(self, epoch_step):
        """(seconds left in the epoch, seconds left in the run) or (None, None)."""
        rate = self.seconds_per_step()
        if rate is None:
            return None, None
        epoch_left = (self.steps_per_epoch - epoch_step) * rate
        run_left = (self.total_steps - self._step) * rate
        if self._eval_s is not None:
            epochs_left = -(-(self.total_steps - self._step) // self.steps_per_epoch)
            run_left += epochs_left * self._eval_s
        return epoch_left, run_left

    def status_text(self, epoch, epoch_step, loss, lr):
        ips = self.images_per_second()
        epoch_left, run_left = self.eta(epoch_step)
        return (f"epoch {epoch + 1}/{self.epochs} step {epoch_step}/{self.steps_per_epoch} "
                f"(run {self._step}/{self.total_steps}) loss {loss:.4f} lr {lr:.3e} "
                f"{'?' if ips is None else f'{ips:.1f}'} img/s ETA epoch "
                f"{format_seconds(epoch_left)} run {format_seconds(run_left)}")

    def estimate_text(self):
        rate = self.seconds_per_step()
        left = (self.total_steps - self._step) * rate
        return (f"estimate: {about(left)} for the {self.total_steps - self._step} steps left "
                f"({rate:.3f} s per step, {self.images_per_step / rate:.1f} images/s), plus the "
                f"evaluations")

    # ---- rendering -----------------------------------------------------------------

    def _tqdm_update(self, epoch, epoch_step, loss, lr):
        if self._bar is None or self._bar_epoch != epoch:
            self._clear()
            self._bar = _tqdm_class()(total=self.steps_per_epoch, initial=0, file=self.stream,
                                      desc=f"epoch {epoch + 1}/{self.epochs}", unit="step",
                                      leave=False, dynamic_ncols=True)
            self._bar_epoch = epoch
        ips = self.images_per_second()
        _, run_left = self.eta(epoch_step)
        self._bar.set_postfix_str(f"loss {loss:.4f} lr {lr:.3e} "
                                  f"{'?' if ips is None else f'{ips:.1f}'} img/s "
                                  f"run ETA {format_seconds(run_left)}", refresh=False)
        self._bar.update(epoch_step - self._bar.n)

    def _clear(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = self._bar_epoch = None
        if self._line_shown:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._line_shown = False
            self._width = 0
