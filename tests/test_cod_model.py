"""The C COD model against its PyTorch twin (float64 fixtures in tests/data/cod, made by
tools/make_cod_reference.py from tools/cod_twin.py), plus the Python Model API."""
import dataclasses
import json
import os
import sys

import numpy as np
import pytest

import codext
from codext.model import Model, ModelConfig, load
from opcheck import relative_error

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
from reference_weights import make_weights  # noqa: E402

FIXTURES = {name: os.path.join(HERE, "data", "cod", name + ".npz")
            for name in ("cod_dense_e7", "cod_sparse_e3_top2")}
TOL = 1e-4  # per tensor, ||ours - ref|| / ||ref||; the twin in float32 is within 2e-5


def tiny(**kwargs):
    args = dict(backbone="edgenext_tiny_test", decoder_dim=16, num_experts=7, img_size=64)
    args.update(kwargs)
    return Model(**args)


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def fixture(request):
    """(npz, model with the fixture's weights, parts, grads) after one loss_and_grads."""
    d = np.load(FIXTURES[request.param])
    names = [str(n) for n in d["names"]]
    shapes = [tuple(s) for s in json.loads(str(d["shapes"]))]
    cfg = json.loads(str(d["config"]))
    m = Model(cfg["backbone"], cfg["decoder_dim"], cfg["num_experts"], cfg["moe_top_k"],
              ds_weight=cfg["ds_weight"], balance_weight=cfg["balance_weight"], img_size=64)
    m.load_state_dict(make_weights(zip(names, shapes), int(d["seeds"][0])))
    parts, grads = m.loss_and_grads(d["x"], d["y"])
    return d, names, shapes, m, parts, grads


def test_names_and_shapes_equal_the_twin(fixture):
    d, names, shapes, m, _, _ = fixture
    assert m.parameter_names() == names
    state = m.state_dict()
    assert [state[n].shape for n in names] == shapes


def test_outputs_and_intermediates_match(fixture):
    d, _, _, m, _, _ = fixture
    outs = m.forward(d["x"])
    assert len(outs) == 4
    for k, out in enumerate(outs):
        assert out.dtype == np.float32 and out.shape == (2, 1, 64, 64)
        assert relative_error(out, d[f"out{k}"]) <= TOL, f"out{k}"
    inter = m._native.intermediates()
    for key in ("feat", "proj", "neck", "dec", "logit"):
        for i in range(4):
            assert relative_error(inter[f"{key}{i}"], d[f"{key}{i}"]) <= TOL, f"{key}{i}"


def test_loss_parts_match(fixture):
    d, _, _, m, parts, _ = fixture
    sparse = m.config.moe_top_k > 0
    assert set(parts) == {k[5:] for k in d.files if k.startswith("loss:")}
    assert ("balance" in parts) == sparse
    for key, value in parts.items():
        assert relative_error(value, d["loss:" + key]) <= TOL, key
    assert abs(parts["total"] - float(d["loss:total"])) <= 1e-6 * abs(float(d["loss:total"]))


def test_every_gradient_matches(fixture):
    d, names, _, _, _, grads = fixture
    errors = {n: relative_error(grads[n], d["grad:" + n]) for n in names}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOL, f"{worst}: {errors[worst]:.2e}"


def test_routing_matches_the_twin(fixture):
    d, _, _, m, _, _ = fixture
    m.forward(d["x"])
    routing = m._native.routing()
    for i in range(4):
        assert relative_error(routing[i]["probs"], d[f"gate{i}"]) <= 1e-5
        if m.config.moe_top_k:
            assert np.array_equal(routing[i]["chosen"], d[f"chosen{i}"])
            assert relative_error(routing[i]["weights"], d[f"moe_weight{i}"]) <= 1e-5
            assert abs(routing[i]["balance"] - float(d[f"balance{i}"])) <= 1e-6


def test_stage1_leaves_the_backbone_alone(fixture):
    d, names, _, m, _, grads = fixture
    native = m._native
    buffer = native.grads()
    floats = native.config()["backbone_floats"]
    native.zero_grads()
    buffer[:floats] = 7.0  # stage 1 must not read or write the backbone's gradients
    native.forward(d["x"], True)
    native.loss(d["y"])
    native.backward(1.0, False)
    assert np.all(buffer[:floats] == 7.0)
    stage1 = m.grads()
    for n in names:
        if not n.startswith("backbone."):
            assert np.array_equal(stage1[n], grads[n]), n
    _, grads_stage1 = m.loss_and_grads(d["x"], d["y"], train_backbone=False)
    assert not any(grads_stage1[n].any() for n in names if n.startswith("backbone."))


def test_backward_accumulates_and_scales(fixture):
    d, names, _, m, _, grads = fixture
    native = m._native
    native.zero_grads()
    native.forward(d["x"], True)
    native.loss(d["y"])
    native.backward(0.5)
    native.backward(0.25)  # again after the same loss: adds up
    twice = m.grads()
    for n in names[::7]:
        assert np.allclose(twice[n], 0.75 * grads[n], rtol=1e-5, atol=1e-7 * np.abs(grads[n]).max()), n


@pytest.mark.parametrize("top_k", [0, 2])
def test_bit_identical_with_one_and_two_threads(top_k):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 3, 64, 64)).astype(np.float32)
    y = (rng.random((3, 1, 64, 64)) > 0.6).astype(np.float32)
    before = codext.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            codext.set_num_threads(threads)
            m = tiny(num_experts=4, moe_top_k=top_k, seed=3)
            outs = m.forward(x)
            parts, grads = m.loss_and_grads(x, y)
            results.append((outs, parts, grads))
    finally:
        codext.set_num_threads(before)
    (o1, p1, g1), (o2, p2, g2) = results
    assert all(np.array_equal(a, b) for a, b in zip(o1, o2))
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)
    assert all(np.array_equal(g1[n], g2[n]) for n in g1)


def test_sparse_routing_covers_every_case():
    """top-k 1 with E = 9 (two experts per type, cycling) over a batch of 5: some experts
    get no image, others several; gradients flow and stay finite."""
    rng = np.random.default_rng(1)
    m = tiny(num_experts=9, moe_top_k=1, seed=2)
    state = m.state_dict()
    for n in state:  # a non-zero gate so the images route differently
        if ".moe.gate." in n:
            state[n] = rng.standard_normal(state[n].shape).astype(np.float32)
    m.load_state_dict(state)
    x = rng.standard_normal((5, 3, 64, 64)).astype(np.float32)
    y = (rng.random((5, 1, 64, 64)) > 0.5).astype(np.float32)
    parts, grads = m.loss_and_grads(x, y)
    routing = m._native.routing()
    for r in routing:
        assert r["chosen"].shape == (5, 1)
        assert np.allclose(r["weights"].sum(1), 1.0)
        counts = np.bincount(r["chosen"].ravel(), minlength=9)
        frac, mean = counts / 5.0, r["probs"].astype(np.float64).mean(0)
        assert abs(r["balance"] - 9 * (frac * mean).sum()) <= 1e-9
    assert np.isfinite(parts["total"]) and all(np.all(np.isfinite(g)) for g in grads.values())
    unused = [(i, e) for i, r in enumerate(routing) for e in range(9) if e not in r["chosen"]]
    assert unused, "want at least one expert without images"
    i, e = unused[0]
    assert not grads[f"neck.{i}.moe.experts.{e}.pw.weight"].any()


def test_default_init_follows_the_twin():
    m = tiny(num_experts=7, seed=5)
    state = m.state_dict()
    for i in range(4):
        assert not state[f"neck.{i}.moe.gate.weight"].any() and not state[f"neck.{i}.moe.gate.bias"].any()
    edge = state["neck.0.moe.experts.2.edge.weight"]  # [3D, 1, 3, 3]
    sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)
    assert np.array_equal(edge[3, 0], sobel_x) and np.array_equal(edge[5, 0], laplacian)
    assert np.array_equal(edge[1, 0], sobel_x.T)
    assert not state["neck.0.moe.experts.2.edge.bias"].any()
    assert np.all(state["neck.1.moe.experts.6.xca.temperature"] == 1)
    assert np.all(state["decoder.fuse.0.norm1.weight"] == 1) and not state["decoder.fuse.0.norm1.bias"].any()
    w = state["decoder.fuse.1.conv1.weight"]  # torch default: U(+-1/sqrt(fan_in)), fan_in 2D*9
    bound = 1 / np.sqrt(32 * 9)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound and abs(w.mean()) < 0.1 * bound
    # the backbone is initialised exactly as a Backbone with the same seed
    b = codext.Backbone("edgenext_tiny_test", seed=5).state_dict()
    assert all(np.array_equal(state["backbone." + n], v) for n, v in b.items())


def test_weight_decay_flags_follow_the_twin():
    m = tiny(num_experts=7)
    for name, shape, _, decay in m._table:
        expected = len(shape) > 1 and not name.endswith("temperature") and ".moe.gate." not in name
        assert decay == expected, name


def test_predict_matches_forward_and_takes_every_input_kind():
    m = tiny(num_experts=3, seed=1)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    x, _ = codext.data.augment_batch(img[None], None, np.arange(1), train=False)
    expected = 1 / (1 + np.exp(-m.forward(x)[0][0, 0].astype(np.float64)))
    assert relative_error(m.predict(img), expected) <= 1e-6
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((50, 70), (33, 20), (64, 64))]
    probs = m.predict(images, batch_size=2)
    assert [p.shape for p in probs] == [(50, 70), (33, 20), (64, 64)]
    assert all(p.dtype == np.float32 and p.min() >= 0 and p.max() <= 1 for p in probs)
    one = m.predict(images[0])
    assert np.allclose(one, probs[0], atol=1e-6)
    batch = m.predict(np.stack([images[0], images[0]]))
    assert batch.shape == (2, 50, 70) and np.allclose(batch[1], one, atol=1e-6)
    sparse = tiny(num_experts=3, moe_top_k=1, seed=1).predict(images, batch_size=3)
    assert [p.shape for p in sparse] == [(50, 70), (33, 20), (64, 64)]


def test_batch_prediction_is_the_data_path_and_model_step_by_step():
    """predict's one C call per batch gives, bit for bit, what the separate steps give:
    resize each image to img_size, normalise, forward, sigmoid, resize to the out size."""
    m = tiny(num_experts=3, seed=2)
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((50, 70), (33, 20), (64, 64))]
    out_sizes = [(50, 70), (41, 17), (64, 64)]
    got = m._predict_at(images, out_sizes, 3)
    resized = np.stack([codext.data.resize_image(img, 64) for img in images])
    x, _ = codext.data.augment_batch(resized, None, np.arange(3), train=False)
    m._native.forward(x, False)
    probs = m._native.probabilities()
    for p, prob, size in zip(got, probs, out_sizes):
        assert p.shape == size and p.dtype == np.float32
        assert np.array_equal(p, codext.data.resize_probs(prob[0], size))
    with pytest.raises(ValueError, match="3 images but 2 output sizes"):
        m._predict_at(images, out_sizes[:2], 3)
    with pytest.raises(TypeError, match="image 1 must be a C-contiguous uint8"):
        m._native.predict_batch([images[0], images[1].astype(np.float32)], 64, out_sizes[:2])
    with pytest.raises(ValueError, match="output size 0 x 5"):
        m._native.predict_batch(images[:1], 64, [(0, 5)])


def test_predict_rejects_bad_input():
    m = tiny(num_experts=1)
    with pytest.raises(TypeError, match="uint8"):
        m.predict(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        m.predict(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        m.predict(np.zeros((32, 32, 4), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        m.predict([])
    with pytest.raises(ValueError, match="empty"):
        m.predict(np.zeros((0, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        m.predict(np.zeros((0, 32, 3), np.uint8))
    with pytest.raises(TypeError, match="image 1"):
        m.predict([np.zeros((32, 32, 3), np.uint8), "x"])
    with pytest.raises(TypeError, match="numpy array"):
        m.predict("image.png")
    with pytest.raises(ValueError, match="batch_size"):
        m.predict(np.zeros((32, 32, 3), np.uint8), batch_size=0)


def test_forward_and_loss_reject_bad_input():
    m = tiny(num_experts=1)
    with pytest.raises(TypeError, match="float32"):
        m.forward(np.zeros((1, 3, 64, 64)))
    with pytest.raises(ValueError, match="multiples of 32"):
        m.forward(np.zeros((1, 3, 64, 48), np.float32))
    x = np.zeros((2, 3, 64, 64), np.float32)
    with pytest.raises(ValueError, match=r"shape \(2, 1, 64, 64\)"):
        m.loss_and_grads(x, np.zeros((2, 64, 64), np.float32))
    with pytest.raises(ValueError, match="0 and 1"):
        m.loss_and_grads(x, np.full((2, 1, 64, 64), 0.5, np.float32))
    with pytest.raises(RuntimeError, match="forward"):
        tiny(num_experts=1)._native.backward()


@pytest.mark.parametrize("kwargs, match", [
    (dict(img_size=100), "img_size"), (dict(decoder_dim=18), "decoder_dim"),
    (dict(num_experts=0), "num_experts"), (dict(num_experts=3, moe_top_k=4), "moe_top_k"),
    (dict(backbone="resnet50"), "unknown backbone"), (dict(ds_weight=float("nan")), "ds_weight"),
])
def test_bad_configs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_save_load_round_trip_and_config_checks(tmp_path):
    m = tiny(num_experts=3, moe_top_k=2, seed=4, ds_weight=0.25)
    path = tmp_path / "model.safetensors"
    m.save(path)
    again = load(path)
    assert again.config == m.config
    assert all(np.array_equal(a, b) for a, b in zip(again.state_dict().values(), m.state_dict().values()))
    other = tiny(num_experts=3, moe_top_k=2, seed=9)
    other.load(path)
    assert np.array_equal(other.state_dict()["decoder.heads.0.weight"], m.state_dict()["decoder.heads.0.weight"])
    with pytest.raises(ValueError, match="num_experts: file 3, model 4"):
        tiny(num_experts=4).load(path)
    with pytest.raises(ValueError, match="missing keys: neck.0.proj.conv.bias"):
        state = m.state_dict()
        del state["neck.0.proj.conv.bias"]
        m.load_state_dict(state)
    with pytest.raises(ValueError, match="mis-shaped: decoder.heads.0.weight"):
        m.load_state_dict(dict(m.state_dict(), **{"decoder.heads.0.weight": np.zeros((1, 15, 1, 1))}))
    backbone_file = tmp_path / "backbone.safetensors"
    codext.Backbone("edgenext_tiny_test", seed=11).save(backbone_file)
    with pytest.raises(ValueError, match="not a codext model checkpoint"):
        load(backbone_file)
    m.load_backbone(backbone_file)
    assert np.array_equal(m.state_dict()["backbone.stem.0.weight"],
                          codext.Backbone("edgenext_tiny_test", seed=11).state_dict()["stem.0.weight"])
    assert ModelConfig.from_json(m.config.to_json()) == m.config
    assert dataclasses.asdict(m.config)["ds_weight"] == 0.25


def test_model_from_config_matches_keyword_construction():
    import codext
    cfg = codext.Config(backbone="edgenext_tiny_test", decoder_dim=16, num_experts=3, moe_top_k=2,
                        img_size=64, seed=4, deep_supervision=False)
    a = codext.Model(cfg)
    b = codext.Model("edgenext_tiny_test", decoder_dim=16, num_experts=3, moe_top_k=2, seed=4,
                     ds_weight=0.0, img_size=64)
    assert a.config == b.config
    sa, sb = a.state_dict(), b.state_dict()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
