"""The op table (csrc/ops/op_list.h): one declaration per op, supports(op), the check made
when a model is bound to a backend, and the op-test runner's coverage of the table."""
import numpy as np
import pytest

from testing_module import testing

# The ops the CUDA backend implements today (kernels/*.cu): binding a model to a backend
# with only these must name all the others the model needs.
CUDA_TODAY = {
    "conv2d_forward", "conv2d_backward", "linear_forward", "linear_backward",
    "layernorm_forward", "layernorm_backward", "layernorm2d_forward", "layernorm2d_backward",
    "gelu_forward", "gelu_backward", "sigmoid_forward", "sigmoid_backward", "add", "axpy",
    "mul_forward", "mul_backward", "affine",
}


def needed_ops(kind, **config):
    """The ops binding the model needs, read from the error of a backend refusing them all."""
    with pytest.raises(RuntimeError) as error:
        testing.bind_model(kind, unsupported=testing.table_ops(), **config)
    return set(str(error.value).split("needs: ", 1)[1].split(", "))


def test_table_ops_are_distinct_and_the_cpu_supports_all():
    ops = testing.table_ops()
    assert len(ops) >= 41 and len(set(ops)) == len(ops)
    supports = testing.backend_supports("cpu")
    assert list(supports) == ops and all(supports.values())


def test_runner_covers_every_op_of_the_table():
    covered = set()
    for name in testing.op_names():
        info = testing.op_info(name)
        assert info["cpu_internal"] or info["forward_ops"], name
        covered |= set(info["forward_ops"]) | set(info["backward_ops"])
    assert covered == set(testing.table_ops()), sorted(set(testing.table_ops()) - covered)


@pytest.mark.parametrize("kind", ["cod", "backbone"])
def test_binding_checks_every_op_the_model_needs(kind):
    testing.bind_model(kind)  # the CPU backend has them all
    needed = needed_ops(kind)
    assert needed <= set(testing.table_ops())
    assert {"conv2d_forward", "conv2d_backward", "layernorm_forward", "xca_forward", "xca_backward"} <= needed
    if kind == "cod":
        assert {"structure_loss_forward", "structure_loss_backward", "resize_bilinear_forward"} <= needed
    # one op refused: one error naming it (and only it)
    with pytest.raises(RuntimeError, match=r"does not implement 1 of the \d+ ops it needs: xca_backward$"):
        testing.bind_model(kind, unsupported=["xca_backward"])
    # an op the model does not call may be missing
    spare = sorted(set(testing.table_ops()) - needed)
    if spare:
        testing.bind_model(kind, unsupported=spare)


def test_binding_to_todays_cuda_op_set_names_the_rest():
    assert CUDA_TODAY <= set(testing.table_ops())
    lacking = sorted(set(testing.table_ops()) - CUDA_TODAY)
    needed = needed_ops("cod")
    with pytest.raises(RuntimeError) as error:
        testing.bind_model("cod", unsupported=lacking)
    message = str(error.value)
    assert message.startswith("the cpu backend cannot run the COD model: it does not implement")
    assert set(message.split("needs: ", 1)[1].split(", ")) == needed - CUDA_TODAY


def test_runner_refuses_an_unsupported_op_naming_it():
    x = np.ones(5, np.float32)
    with pytest.raises(RuntimeError, match="does not implement 1 of the 1 ops it needs: gelu_forward"):
        testing.op("gelu", [x], unsupported=["gelu_forward"])
    with pytest.raises(RuntimeError, match="sigmoid_backward"):
        testing.op("sigmoid", [x, x], backward=True, unsupported=["sigmoid_backward"])
    assert np.array_equal(testing.op("gelu", [x], unsupported=["gelu_backward"])[0],
                          testing.op("gelu", [x])[0])
    with pytest.raises(KeyError, match="no table op"):
        testing.op("gelu", [x], unsupported=["gelu"])


def test_outputs_then_saved_state_for_every_entry():
    """Forward calls return the outputs, then the saved state when the op keeps one."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    y, saved = testing.op("layernorm", [x, np.ones(6, np.float32), np.zeros(6, np.float32)], fargs=[1e-6])
    assert y.shape == x.shape and saved.shape == (2, 3)
    np.testing.assert_allclose(saved[0], x.mean(1), rtol=1e-5)
    y, norms = testing.op("l2norm", [x], fargs=[1e-12])
    np.testing.assert_allclose(norms, np.linalg.norm(x, axis=1), rtol=1e-5)
    for name in testing.op_names():
        info = testing.op_info(name)
        assert info["outputs"] == 1 and info["min_inputs"] <= info["max_inputs"], name
