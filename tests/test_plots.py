"""codext.plots: TrainResult.plot() and codext.show_predictions draw what the history and the
model hold (checked on the figure's data, not on pixels)."""
import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import codext  # noqa: E402
from codext.model import Model  # noqa: E402
from codext.plots import plot_history  # noqa: E402
from codext.train import TrainResult  # noqa: E402


def history(epochs=3, steps_per_epoch=4):
    steps = epochs * steps_per_epoch
    return {
        "step_loss": np.linspace(1.0, 0.2, steps),
        "step_lr": np.linspace(1e-4, 1e-3, steps),
        "step_epoch": np.repeat(np.arange(epochs), steps_per_epoch),
        "epoch": np.arange(epochs),
        "epoch_loss": np.array([0.9, 0.5, 0.3])[:epochs],
        "val_sm": np.array([np.nan, 0.6, 0.7])[:epochs],
        "val_mae": np.array([np.nan, 0.2, 0.1])[:epochs],
    }


def test_result_plot_draws_loss_lr_and_the_evaluated_epochs():
    h = history()
    result = TrainResult(history=h, best_checkpoint="b", last_checkpoint="l", metrics={},
                         config=codext.Config.demo())
    fig = result.plot(title="run")
    ax_loss, ax_lr, ax_val = fig.axes
    assert np.array_equal(ax_loss.lines[0].get_ydata(), h["step_loss"])
    assert np.array_equal(ax_loss.lines[1].get_ydata(), h["epoch_loss"])
    assert np.array_equal(ax_lr.lines[0].get_ydata(), h["step_lr"])
    curves = {line.get_label(): line for line in ax_val.lines}
    assert set(curves) == {"sm", "mae"}
    # the epoch without evaluation (NaN) is left out, epochs count from 1
    assert np.array_equal(curves["sm"].get_xdata(), [2, 3])
    assert np.array_equal(curves["sm"].get_ydata(), [0.6, 0.7])
    assert fig._suptitle.get_text() == "run"


def test_plot_without_validation_says_so():
    h = history()
    del h["val_sm"], h["val_mae"]
    fig = plot_history(h)
    assert not fig.axes[2].lines
    assert "no validation" in fig.axes[2].texts[0].get_text()


def test_plot_history_rejects_what_is_not_a_history():
    with pytest.raises(TypeError, match="TrainResult.history"):
        plot_history([1, 2])
    with pytest.raises(ValueError, match="step_lr"):
        plot_history({"step_loss": [], "epoch": [], "epoch_loss": []})


def test_show_predictions_shows_image_truth_and_the_models_prediction():
    data = codext.data.synthetic(0, 5, 32, seed=2)
    model = Model(backbone="edgenext_tiny_test", decoder_dim=16, num_experts=3, img_size=32, seed=1)
    fig = codext.show_predictions(model, data.test, n=3, start=1)
    assert len(fig.axes) == 9
    expected = model.predict(data.test.images[1:4])
    for row in range(3):
        image, truth, pred = (ax.images[0].get_array() for ax in fig.axes[3 * row:3 * row + 3])
        assert np.array_equal(image, data.test.images[1 + row])
        assert np.array_equal(truth, data.test.masks[1 + row])
        assert np.allclose(pred, expected[row])
    # fewer images left than asked: one row per remaining image
    assert len(codext.show_predictions(model, data.test, n=10, start=3).axes) == 6


def test_show_predictions_bad_arguments():
    data = codext.data.synthetic(0, 2, 32, seed=2)
    model = Model(backbone="edgenext_tiny_test", decoder_dim=16, num_experts=3, img_size=32, seed=1)
    with pytest.raises(TypeError, match="codext.Model"):
        codext.show_predictions("model.safetensors", data.test)
    with pytest.raises(TypeError, match="Split"):
        codext.show_predictions(model, data.test.images)
    with pytest.raises(ValueError, match="n must be"):
        codext.show_predictions(model, data.test, n=0)
    with pytest.raises(ValueError, match="start must be"):
        codext.show_predictions(model, data.test, start=2)
