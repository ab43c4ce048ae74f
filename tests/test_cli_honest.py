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


# ---- hints in the words the user typed ---------------------------------------------------------

def parse_train(argv):
    return cli.train_config(cli.build_parser().parse_args(["train"] + argv))


def no_python_words(text):
    return "Config." not in text and "=True" not in text and "cache_dir=" not in text


@pytest.mark.parametrize("argv,message", [
    (["train", "--moe-top-k", "5", "--num-experts", "3"],
     "--moe-top-k must be 0 (dense) or 1..--num-experts (3), got 5"),
    (["train", "--scheduler", "cosine", "--lr", "1e-7", "--min-lr", "1e-6"],
     "--min-lr (1e-06) must not exceed --lr and --stage2-lr"),
    (["train", "--epochs", "3", "--stage1-epochs", "4"],
     "--stage1-epochs (4) must not exceed --epochs (3)"),
])
def test_config_errors_name_flags(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and no_python_words(err)


def test_an_unwritable_checkpoint_dir_names_the_flag(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    ck = str(tmp_path / "a-file" / "ck")
    assert cli.main(["train", "--backbone", "edgenext_tiny_test", "--img-size", "32",
                     "--synthetic-train", "8", "--synthetic-test", "0", "--epochs", "1",
                     "--checkpoint-dir", ck]) == 1
    err = capsys.readouterr().err
    assert "--checkpoint-dir" in err and "cannot be created (Not a directory)" in err and \
        "set --checkpoint-dir to a writable folder" in err and no_python_words(err)


def test_library_words_become_flags():
    """Messages the CLI passes on from the library (codext/_rundir.py, codext.train,
    codext.launch) in the CLI's words; the Python API keeps its own."""
    f = cli._flagify
    assert f("cannot resume from x: it was written with another configuration (lr: checkpoint "
             "0.001, now 0.005; stage2_lr: checkpoint None, now 0.1)") == \
        ("cannot resume from x: it was written with another configuration (--lr: checkpoint "
         "0.001, now 0.005; --stage2-lr: checkpoint None, now 0.1)")
    assert f("8 training images make no full global batch of Config.batch_size 16 x "
             "Config.accumulation_steps 1 = 16") == \
        "8 training images make no full global batch of --batch-size 16 x --accumulation-steps 1 = 16"
    assert f("nprocs=9 is more than the 2 CPU cores") == "--nprocs 9 is more than the 2 CPU cores"


def write_set(root, n, unpaired=False):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for split in ("Train", "Test"):
        os.makedirs(root / split / "Image", exist_ok=True)
        os.makedirs(root / split / "GT_Object", exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
                root / split / "Image" / f"cam_{i}.png")
            mask = np.zeros((40, 40), np.uint8)
            mask[10:30, 8:20] = 255
            Image.fromarray(mask).save(root / split / "GT_Object" / f"cam_{i}.png")
        if unpaired:
            Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / split / "Image" / "lonely.png")


def test_strict_is_a_flag_and_the_warnings_say_so(model_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CODEXT_CACHE_DIR", str(tmp_path / "cache"))
    write_set(tmp_path / "set", 3, unpaired=True)
    assert cli.main(["eval", "--checkpoint", model_file, "--dataset-path", str(tmp_path / "set")]) == 0
    err = capsys.readouterr().err
    assert "warning: codext.data: skipping unpaired files (--strict makes this an error)" in err
    assert "lonely.png" in err and no_python_words(err) and "Traceback" not in err
    assert cli.main(["eval", "--checkpoint", model_file, "--dataset-path", str(tmp_path / "set"),
                     "--strict"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("codext: error: --strict: unpaired files") and no_python_words(err)


def test_an_image_size_is_suggested_only_when_the_config_accepts_it():
    cfg = codext.Config(backbone="edgenext_tiny_test", img_size=32, decoder_dim=8, num_experts=2,
                        batch_size=2, epochs=1, stage1_epochs=0)
    for side, suggested in ((50, False), (64, True)):
        data = codext.data.from_arrays(np.zeros((4, side, side, 3), np.uint8),
                                       np.zeros((4, side, side), np.uint8))
        with pytest.raises(ValueError, match=f"are {side}x{side} but Config.img_size is 32") as e:
            codext.train(cfg, data, progress=False)
        assert (f"set Config.img_size {side}" in str(e.value)) == suggested
        if suggested:
            codext.Config(img_size=side)                 # the suggestion is a valid value
        else:
            assert "multiple of 32" in str(e.value)


# ---- demo defaults the user never set ----------------------------------------------------------

def test_epochs_alone_fits_the_demos_frozen_epochs(monkeypatch):
    monkeypatch.setattr(cli, "gpu_for_training", lambda device="auto", use_ddp=False: False)
    demo = codext.Config.demo()
    assert demo.stage1_epochs > 1                        # what makes `--epochs 1` a problem
    cfg, is_demo, notes = parse_train(["--epochs", "1"])
    assert is_demo and cfg.epochs == 1 and cfg.stage1_epochs == 0
    assert cfg == codext.Config.demo(epochs=1, stage1_epochs=0)
    assert len(notes) == 1 and notes[0].startswith("note: --stage1-epochs 0:")
    assert "--epochs 1" in notes[0] and "give --stage1-epochs N" in notes[0]
    cfg, _, notes = parse_train(["--epochs", "5", "--no-demo"])      # the full defaults too
    assert cfg.stage1_epochs == 2 and "the default 30 frozen-backbone epochs" in notes[0]
    cfg, _, notes = parse_train(["--epochs", str(demo.stage1_epochs)])  # no stage-2 epoch left
    assert cfg.stage1_epochs == demo.stage1_epochs // 2 and "leave no stage-2 epoch" in notes[0]
    cfg, _, notes = parse_train(["--epochs", str(demo.stage1_epochs + 1)])  # fits: untouched
    assert cfg.stage1_epochs == demo.stage1_epochs and notes == []
    # a value the user typed is never changed: their contradiction is their error
    with pytest.raises(cli.UsageError, match=r"--stage1-epochs \(2\) must not exceed --epochs \(1\)"):
        parse_train(["--epochs", "1", "--stage1-epochs", "2"])
    # the cosine floor likewise
    cfg, _, notes = parse_train(["--scheduler", "cosine", "--lr", "1e-7", "--no-demo"])
    assert cfg.min_lr == 1e-7 and "--min-lr 1e-07" in notes[0]


def test_epochs_alone_trains(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "gpu_for_training", lambda device="auto", use_ddp=False: False)
    assert cli.main(["train", "--epochs", "1", "--backbone", "edgenext_tiny_test", "--img-size", "32",
                     "--decoder-dim", "8", "--synthetic-train", "32", "--synthetic-test", "4",
                     "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    out, err = capsys.readouterr()
    assert "note: --stage1-epochs 0" in err and "epoch 1/1 stage 2" in out


def test_demo_with_a_dataset_says_where_it_trains(monkeypatch):
    monkeypatch.setattr(cli, "gpu_for_training", lambda device="auto", use_ddp=False: False)
    here = os.path.dirname(os.path.abspath(__file__))
    cfg, demo, _ = parse_train(["--demo", "--dataset-path", here])
    assert demo and cfg.dataset_path == here
    text = cli.demo_banner(cfg, {"dataset_path"}, asked=True)
    assert f"on {here}" in text and "synthetic" not in text and "(--demo)" in text
    text = cli.demo_banner(codext.Config.demo(), set())
    assert "on the synthetic set" in text and "no --dataset-path and no GPU" in text
