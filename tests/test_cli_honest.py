"""Nothing silently wrong (issue 11): machine-readable output stays machine-readable, a
broken model fails instead of writing plausible masks, hints name what the user typed,
and every flag does what its help says."""
import json
import os

import numpy as np
import pytest

import codext
from codext import cli


def tiny_model(seed=1):
    return codext.Model("edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32, seed=seed)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    tiny_model().save(str(path))
    return str(path)


# ---- eval --json - ---------------------------------------------------------------------------

def test_eval_json_to_stdout_is_json_alone(model_file, capsys):
    assert cli.main(["eval", "--checkpoint", model_file, "--synthetic-test", "3", "--json", "-"]) == 0
    out, err = capsys.readouterr()
    metrics = json.loads(out)                       # the whole of stdout parses
    assert metrics["n_images"] == 3
    assert "model:" in err and "synthetic (3 images" in err


def test_eval_json_to_a_file_keeps_the_lines_on_stdout(model_file, tmp_path, capsys):
    assert cli.main(["eval", "--checkpoint", model_file, "--synthetic-test", "3",
                     "--json", str(tmp_path / "m.json")]) == 0
    out, err = capsys.readouterr()
    assert "model:" in out and "synthetic (3 images" in out and err == ""


# ---- a model that is not finite ----------------------------------------------------------------

def broken_file(tmp_path, how):
    m = tiny_model()
    if how == "nan":
        m._params[len(m._params) // 2] = np.nan
    elif how == "inf":
        m._params[3] = np.inf
    else:  # finite weights whose forward overflows float32
        m._params[:] *= np.float32(1e30)
    path = tmp_path / f"{how}.safetensors"
    m.save(str(path))
    return str(path)


@pytest.mark.parametrize("how", ["nan", "inf", "overflow"])
def test_predict_with_a_broken_model_fails_naming_the_file(how, tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    path = broken_file(tmp_path, how)
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(tmp_path / "x.png")
    out = tmp_path / "masks"
    assert cli.main(["predict", "--checkpoint", path, "--input", str(tmp_path / "x.png"),
                     "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert path in err and "not finite" in err and "Traceback" not in err
    assert not out.exists() or os.listdir(out) == []          # no all-zero masks written


@pytest.mark.parametrize("how", ["nan", "overflow"])
def test_model_predict_and_evaluate_refuse_a_broken_model(how, tmp_path):
    path = broken_file(tmp_path, how)
    model = codext.load(path)
    with pytest.raises(RuntimeError, match="not finite") as e:
        model.predict(np.zeros((20, 20, 3), np.uint8))
    assert path in str(e.value)
    split = codext.data.synthetic(0, 2, 32, 0).test
    with pytest.raises(RuntimeError, match="not finite") as e:
        codext.evaluate(model, split)
    assert path in str(e.value)
    # a model that came from no file says so; a finite one predicts
    fresh = tiny_model()
    fresh._params[7] = np.nan
    with pytest.raises(RuntimeError, match=r"the model: cannot predict: .*weights are not finite "
                                           r"\(first: backbone\.\S+ = nan\)"):
        fresh.predict(np.zeros((20, 20, 3), np.uint8))
    assert np.isfinite(tiny_model().predict(np.zeros((20, 20, 3), np.uint8))).all()
