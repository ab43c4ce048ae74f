"""Figures for notebooks: training curves and prediction grids (matplotlib).

    >>> result = codext.launch(cfg)                        # doctest: +SKIP
    >>> result.plot()                                       # doctest: +SKIP
    >>> codext.show_predictions(model, data.test, n=6)      # doctest: +SKIP

Both return the matplotlib Figure (a notebook shows it by itself); nothing here computes:
the predictions come from Model.predict (C) and the curves from TrainResult.history.
matplotlib is imported only when a figure is asked for; without it a clear ImportError
says how to install it.
"""
import numpy as np

__all__ = ["plot_history", "show_predictions"]

# The validation curves drawn when the history has them (all of codext.metrics' scalars
# are in the history; these are the ones users compare runs by).
_METRIC_CURVES = ("val_sm", "val_wfm", "val_mean_em", "val_mae", "val_iou")


def _pyplot():
    try:
        import matplotlib
        if not _has_display_backend(matplotlib):
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("codext's figures need matplotlib: pip install matplotlib") from e
    return plt


def _has_display_backend(matplotlib):
    # In a notebook the inline backend is already chosen; in a script without a display
    # fall back to Agg so that savefig works and nothing tries to open a window.
    import os
    backend = str(matplotlib.get_backend()).lower()
    return "inline" in backend or "ipympl" in backend or bool(os.environ.get("DISPLAY"))


def plot_history(history, title=None):
    """Loss, learning rate and validation-metric curves of a TrainResult's history.

    history: the dict of NumPy arrays TrainResult.history holds ("step_loss", "step_lr",
    "step_epoch", "epoch", "epoch_loss" and "val_<metric>" per epoch). Returns a Figure
    with three panels: loss per step (and the epoch mean), learning rate per step, and the
    validation metrics per epoch (epochs without evaluation are left out)."""
    if not isinstance(history, dict):
        raise TypeError(f"history must be a TrainResult.history dict, got {type(history).__name__}")
    missing = [k for k in ("step_loss", "step_lr", "epoch", "epoch_loss") if k not in history]
    if missing:
        raise ValueError(f"history lacks {', '.join(missing)}: is it a TrainResult.history?")
    plt = _pyplot()
    fig, (ax_loss, ax_lr, ax_val) = plt.subplots(1, 3, figsize=(14, 3.6))
    step_loss = np.asarray(history["step_loss"], dtype=np.float64)
    steps = np.arange(1, len(step_loss) + 1)
    ax_loss.plot(steps, step_loss, lw=0.8, alpha=0.6, label="step")
    epochs = np.asarray(history["epoch"], dtype=np.float64)
    epoch_loss = np.asarray(history["epoch_loss"], dtype=np.float64)
    if len(epochs) and len(step_loss):
        # place each epoch's mean at the epoch's last step
        steps_per_epoch = len(step_loss) / max(len(epochs), 1)
        ax_loss.plot((np.arange(len(epochs)) + 1) * steps_per_epoch, epoch_loss, "o-", label="epoch mean")
    ax_loss.set(xlabel="step", ylabel="loss", title="training loss")
    ax_loss.legend(fontsize=8)
    ax_lr.plot(steps, np.asarray(history["step_lr"], dtype=np.float64))
    ax_lr.set(xlabel="step", ylabel="learning rate", title="learning rate (head)")
    drawn = 0
    for key in _METRIC_CURVES:
        if key not in history:
            continue
        values = np.asarray(history[key], dtype=np.float64)
        keep = np.isfinite(values)
        if keep.any():
            ax_val.plot(epochs[keep] + 1, values[keep], "o-", label=key[4:])
            drawn += 1
    ax_val.set(xlabel="epoch", title="validation")
    if drawn:
        ax_val.legend(fontsize=8)
    else:
        ax_val.text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=ax_val.transAxes)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_predictions(model, split, n=6, start=0, batch_size=8):
    """A grid of n test images: image, ground truth and the model's prediction per row.

    model: a codext.Model; split: a codext.data Split (e.g. data.test); n: rows; start: the
    first image's index. The prediction is Model.predict's foreground probability at the
    image's size (0 black, 1 white). Returns the Figure."""
    from .model import Model
    if not isinstance(model, Model):
        raise TypeError(f"model must be a codext.Model, got {type(model).__name__}")
    images = getattr(split, "images", None)
    masks = getattr(split, "masks", None)
    if not isinstance(images, np.ndarray) or masks is None:
        raise TypeError(f"split must be a codext.data Split (with images and masks), got {type(split).__name__}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start < len(images):
        raise ValueError(f"start must be an index into the split's {len(images)} images, got {start!r}")
    rows = min(int(n), len(images) - int(start))
    picked = images[start:start + rows]
    preds = model.predict(picked, batch_size=batch_size)
    names = list(getattr(split, "names", []))[start:start + rows]
    plt = _pyplot()
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows), squeeze=False)
    for r in range(rows):
        panels = ((picked[r], "image"), (masks[start + r], "ground truth"), (preds[r], "prediction"))
        for c, (pixels, label) in enumerate(panels):
            ax = axes[r][c]
            if pixels.ndim == 2:
                ax.imshow(pixels, cmap="gray", vmin=0, vmax=255 if pixels.dtype == np.uint8 else 1)
            else:
                ax.imshow(pixels)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(label)
        if names:
            axes[r][0].set_ylabel(str(names[r]), fontsize=7)
    fig.tight_layout()
    return fig
