"""python -m codext train|eval|predict: flag mapping, usage errors, and a tiny real run."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import codext
from codext import _device, cli
from codext.config import FIELD_NAMES, Config
from codext.train import evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A valid non-default value for each field (a field missing here gets one from its type).
VALUES = {
    "dataset_path": ROOT, "img_size": 320, "batch_size": 7, "num_workers": 3,
    "backbone": "edgenext_small", "pretrained": "edgenext_small.usi_in1k", "num_experts": 5,
    "moe_top_k": 2, "decoder_dim": 48, "drop_path_rate": 0.1, "deep_supervision": False,
    "ds_weight": 0.25, "balance_weight": 0.02, "epochs": 40, "stage1_epochs": 9, "lr": 3e-4,
    "stage2_lr": 1e-4, "backbone_lr_mult": 0.2, "weight_decay": 0.05, "betas": (0.8, 0.99),
    "eps": 1e-7, "scheduler": "cosine", "warmup_epochs": 2.5, "min_lr": 1e-5, "grad_clip": 1.5,
    "accumulation_steps": 4, "ema_decay": 0.99, "seed": 7, "checkpoint_dir": "/tmp/ck",
    "amp": False, "gradient_checkpointing": True, "deterministic": True, "select_metric": "iou",
    "eval_every": 2, "log_every": 5, "num_threads": 3, "timeout": 30.0, "world_size": 2,
    "device": "cpu",
}


def value_for(name):
    if name in VALUES:
        return VALUES[name]
    default = getattr(Config(), name)
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 3
    if isinstance(default, float):
        return default * 0.5 if default else 0.5
    return "x"


def as_argv(flag, value):
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    if isinstance(value, tuple):
        return [flag] + [str(v) for v in value]
    return [flag, str(value)]


def parse_train(argv):
    return cli.train_config(cli.build_parser().parse_args(["train"] + argv))


def run_cli(*argv, cwd=None, timeout=120):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               CODEXT_NUM_THREADS="2")
    env.pop("CODEXT_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "codext", *argv], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=timeout)


# ---- flag mapping ------------------------------------------------------------------------------

def test_every_config_field_has_a_flag_with_the_seeds_name():
    flags = dict(cli.config_flags())
    assert set(flags.values()) == set(FIELD_NAMES)
    seed_flags = ["--dataset-path", "--batch-size", "--img-size", "--epochs", "--stage1-epochs",
                  "--backbone", "--num-experts", "--moe-top-k", "--accumulation-steps", "--lr",
                  "--stage2-lr", "--scheduler", "--warmup-epochs", "--ema-decay", "--gradient-checkpointing",
                  "--deep-supervision", "--checkpoint-dir", "--pretrained", "--seed", "--decoder-dim",
                  "--num-workers"]
    for flag in seed_flags:
        assert flag in flags, flag
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for flag in seed_flags + ["--no-amp", "--resume", "--use-ddp", "--use-cod-specialized", "--master-port"]:
        assert flag in help_text, flag


@pytest.mark.parametrize("flag,field", cli.config_flags())
def test_flag_lands_in_its_field(flag, field):
    value = value_for(field)
    cfg, demo, notes = parse_train(["--no-demo"] + as_argv(flag, value))
    assert getattr(cfg, field) == value
    assert not demo and len(notes) == (field == "gradient_checkpointing")
    # nothing else moved
    expect = Config(**{field: value})
    assert cfg == expect


def test_no_amp_and_paired_booleans():
    assert parse_train(["--no-amp"])[0].amp is False
    assert parse_train(["--no-deep-supervision"])[0].deep_supervision is False
    assert parse_train(["--no-demo", "--gradient-checkpointing"])[0].gradient_checkpointing is True


def test_demo_defaults_without_dataset_and_flags_still_win(monkeypatch):
    monkeypatch.setattr(cli, "gpu_for_training", lambda device="auto", use_ddp=False: False)
    cfg, demo, _ = parse_train([])
    assert demo and cfg == Config.demo()
    cfg, demo, _ = parse_train(["--epochs", "3", "--img-size", "96"])
    assert demo and cfg == Config.demo(epochs=3, img_size=96)
    cfg, demo, _ = parse_train(["--dataset-path", ROOT])            # a dataset: the real defaults
    assert not demo and cfg == Config(dataset_path=ROOT)
    cfg, demo, _ = parse_train(["--no-demo"])
    assert not demo and cfg == Config()
    monkeypatch.setattr(cli, "gpu_for_training", lambda device="auto", use_ddp=False: device != "cpu")
    cfg, demo, _ = parse_train([])                                  # a GPU: the real defaults
    assert not demo and cfg == Config()
    cfg, demo, _ = parse_train(["--device", "cpu"])                 # but the CPU is the demo's
    assert demo and cfg == Config.demo()
    cfg, demo, _ = parse_train(["--use-ddp"])                       # GPU workers: the real job
    assert not demo and cfg == Config()
    cfg, demo, _ = parse_train(["--use-ddp", "--device", "cpu"])    # CPU workers: the demo
    assert demo and cfg == Config.demo()


def test_gpu_for_training_follows_the_device():
    assert cli.gpu_for_training("cpu") is False
    usable = _device.cuda_status()[0]
    assert cli.gpu_for_training() is usable and cli.gpu_for_training("cuda") is usable
    # --use-ddp: would codext.launch() start GPU workers (decided without loading CUDA)
    assert cli.gpu_for_training("auto", use_ddp=True) is (_device.plan_launch("auto", None)[0] == "cuda")


def test_demo_banner_names_the_real_job():
    text = cli.demo_banner(Config.demo(), {"epochs"})
    assert "DEMO" in text and "--dataset-path" in text and "python -m codext train" in text
    assert "--epochs" in text


def test_seed_multiprocess_flags_are_ignored_with_a_note():
    cfg, demo, notes = parse_train(["--no-demo", "--use-cod-specialized", "--master-port", "29500"])
    assert cfg == Config()
    assert len(notes) == 2 and all("ignored" in n for n in notes)
    assert any("--use-cod-specialized" in n for n in notes)
    assert any("--master-port is ignored without --use-ddp" in n for n in notes)
    cfg, demo, notes = parse_train(["--no-demo", "--use-ddp", "--master-port", "29500"])
    assert notes == []


# ---- usage errors: exit 2 with a message, no traceback ---------------------------------------

@pytest.mark.parametrize("argv,message", [
    (["train", "--img-size", "100"], "--img-size must be a multiple of 32 in 32..4096, got 100"),
    (["train", "--epochs", "5", "--stage1-epochs", "9"], "--stage1-epochs (9) must not exceed --epochs (5)"),
    (["train", "--batch-size", "0"], "--batch-size must be in 1..4096, got 0"),
    (["train", "--moe-top-k", "9", "--num-experts", "7"], "--moe-top-k must be 0"),
    (["train", "--batch-size", "two"], "invalid int value"),
    (["train", "--backbone", "resnet50"], "invalid choice"),
    (["train", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["train", "--resume", "/nonexistent/run"], "--resume /nonexistent/run: no such"),
    (["train", "--dataset-path", "/nonexistent/data"], "--dataset-path /nonexistent/data: no such"),
    (["eval"], "the following arguments are required: --checkpoint"),
    (["eval", "--checkpoint", "/nonexistent.safetensors"], "no such file"),
    (["predict", "--checkpoint", "x.safetensors", "--output", "o"], "required: --input"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["--epochs", "x"], "python -m codext train: error: argument --epochs: invalid int value"),  # no command = train
    (["train", "--device", "gpu"], "error: --device must be 'auto', 'cpu', 'cuda' or 'cuda:N' with "
                                   "N in 0..255 (a GPU is 'cuda'), got 'gpu'"),
    (["train", "--device", "cuda:-1"], "error: --device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    (["train", "--use-ddp", "--device", "cuda:1"], "error: --device 'cuda:1' in a data-parallel "
     "run (codext.launch, --use-ddp, torchrun or srun): each worker trains on the GPU of its "
     "local rank; set --device 'cuda'"),
])
def test_usage_errors_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "error:" in err and "Traceback" not in err


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_device_cuda_without_the_backend_is_a_one_line_usage_error(device, capsys):
    usable, why = _device.cuda_status()
    if usable:
        pytest.skip(f"a usable CUDA backend ({why}): --device cuda is valid here")
    assert cli.main(["train", "--device", device, "--no-demo"]) == 2
    err = capsys.readouterr().err
    first, *rest = err.splitlines()
    assert first == (f"python -m codext train: error: --device {device!r} needs the CUDA backend, "
                     f"which is not usable here: {why}. Set --device 'cpu' (or 'auto') to train "
                     f"on the CPU")
    assert rest == ["(see python -m codext train --help)"]


def test_usage_error_through_the_interpreter():
    r = run_cli("train", "--img-size", "33")
    assert r.returncode == 2
    assert "python -m codext train: error: --img-size must be a multiple of 32 in 32..4096, got 33" in r.stderr
    assert "Traceback" not in r.stderr


def test_failure_exits_1_without_traceback(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    r = run_cli("eval", "--checkpoint", str(bad))
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("codext: error:") and "Traceback" not in r.stderr


# ---- eval and predict on a saved model ---------------------------------------------------------

@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    codext.Model("edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32, seed=1).save(str(path))
    return str(path)


def test_eval_prints_the_metrics(model_file, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert cli.main(["eval", "--checkpoint", model_file, "--synthetic-test", "3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "synthetic (3 images" in text and "S " in text and "IoU " in text
    metrics = json.loads(out.read_text())
    assert metrics["n_images"] == 3 and 0.0 <= metrics["sm"] <= 1.0
    # the same numbers as the API
    split = codext.data.synthetic(0, 3, 32, 1).test
    want = evaluate(codext.load(model_file), split)
    assert metrics["sm"] == pytest.approx(float(want["sm"]), abs=1e-12)


def test_predict_writes_pngs_at_the_input_sizes(model_file, tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"a.jpg": (37, 50), "b.png": (64, 64), "c.png": (20, 91)}
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(src / name)
    (src / "notes.txt").write_text("not an image")
    dst = tmp_path / "out"
    assert cli.main(["predict", "--checkpoint", model_file, "--input", str(src), "--output", str(dst),
                     "--batch-size", "2"]) == 0
    assert sorted(os.listdir(dst)) == ["a.png", "b.png", "c.png"]
    model = codext.load(model_file)
    for name, (h, w) in sizes.items():
        with Image.open(dst / (os.path.splitext(name)[0] + ".png")) as im:
            assert im.mode == "L" and im.size == (w, h)
            mask = np.asarray(im)
        with Image.open(src / name) as im:
            probs = model.predict(np.asarray(im.convert("RGB")))
        assert np.abs(mask.astype(int) - np.rint(probs * 255)).max() <= 1
    # a single image file works too
    assert cli.main(["predict", "--checkpoint", model_file, "--input", str(src / "b.png"),
                     "--output", str(tmp_path / "one")]) == 0
    assert os.listdir(tmp_path / "one") == ["b.png"]


def test_predict_on_a_folder_without_images_is_a_usage_error(model_file, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["predict", "--checkpoint", model_file, "--input", str(tmp_path / "empty"),
                     "--output", str(tmp_path / "o")]) == 2
    assert "no images" in capsys.readouterr().err


# ---- a tiny real run through the interpreter ---------------------------------------------------

TINY = ["--backbone", "edgenext_tiny_test", "--img-size", "32", "--batch-size", "4", "--epochs", "2",
        "--stage1-epochs", "1", "--decoder-dim", "8", "--num-experts", "2", "--lr", "1e-3",
        "--synthetic-train", "8", "--synthetic-test", "4", "--seed", "3", "--num-threads", "2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    r = run_cli("train", *TINY, "--checkpoint-dir", str(run_dir / "ck"), "--use-ddp", cwd=str(run_dir))
    return run_dir, r


def test_train_runs_and_writes_its_files(trained):
    run_dir, r = trained
    assert r.returncode == 0, r.stdout + r.stderr
    ck = run_dir / "ck"
    for name in ("best.safetensors", "last.safetensors", "last.state.step4.safetensors", "history.json"):
        assert (ck / name).is_file(), name
    assert "DEMO" in r.stdout                      # no dataset, no GPU: the demo banner, flags winning
    # --use-ddp: one codext.launch() worker, whose epochs the launcher prints as a table
    assert re.search(r"^ +2/2 +2 ", r.stdout, re.M), r.stdout
    history = json.loads((ck / "history.json").read_text())
    assert len(history["epoch"]) == 2
    assert "best.safetensors" in r.stdout and "python -m codext eval" in r.stdout


def test_eval_and_predict_on_the_trained_checkpoint(trained, tmp_path):
    run_dir, r = trained
    assert r.returncode == 0, r.stdout + r.stderr
    e = run_cli("eval", "--checkpoint", str(run_dir / "ck"), "--json", "-")
    assert e.returncode == 0, e.stderr
    metrics = json.loads(e.stdout[e.stdout.index("{"):])
    assert metrics["n_images"] == 4                 # the run's synthetic test set (from its settings)
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.full((45, 70, 3), 128, np.uint8)).save(tmp_path / "x.jpg")
    p = run_cli("predict", "--checkpoint", str(run_dir / "ck" / "best.safetensors"),
                "--input", str(tmp_path / "x.jpg"), "--output", str(tmp_path / "masks"))
    assert p.returncode == 0, p.stderr
    with Image.open(tmp_path / "masks" / "x.png") as im:
        assert im.size == (70, 45) and im.mode == "L"


def test_resume_takes_the_runs_own_config(trained):
    run_dir, r = trained
    assert r.returncode == 0, r.stdout + r.stderr
    ck = str(run_dir / "ck")
    args = cli.build_parser().parse_args(["train", "--resume", ck])
    cfg, demo, _ = cli.train_config(args)
    assert not demo and cfg.backbone == "edgenext_tiny_test" and cfg.img_size == 32 and cfg.seed == 3
    # the finished run resumes to its end at once, without the demo banner
    again = run_cli("train", "--resume", ck, cwd=str(run_dir))
    assert again.returncode == 0, again.stderr
    assert "DEMO" not in again.stdout and "best weights" in again.stdout
    # a change that alters the weights is refused by train(): a failure, exit 1, one line
    other = run_cli("train", "--resume", ck, "--lr", "0.005", cwd=str(run_dir))
    assert other.returncode == 1
    assert "another configuration" in other.stderr and "lr" in other.stderr and "Traceback" not in other.stderr
