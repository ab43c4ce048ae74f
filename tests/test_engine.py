"""Engine-level behaviour: build info, threads, the op-test runner's registry."""
import os
import subprocess
import sys

import pytest

import codext
from testing_module import testing

EXPECTED_OPS = {
    "conv2d", "linear", "gemm", "layernorm", "layernorm2d", "l2norm", "gelu", "sigmoid", "softmax",
    "add", "mul", "affine", "scale_mid", "scale_outer_inner", "transpose", "copy_channels",
    "avgpool2d", "adaptive_avgpool2d", "global_avgpool", "resize_bilinear", "xca", "posenc_fourier",
    "axpy", "structure_loss",
}


def test_build_info_reports_what_was_compiled():
    info = codext.build_info()
    for key in ("cuda", "cuda_version", "cudnn_version", "nccl_version", "cuda_archs", "cpu_threads"):
        assert key in info
    assert info["cpu_threads"] >= 1
    if info["cuda"]:
        assert info["cuda_version"] and info["cudnn_version"].startswith("9.")
        assert info["nccl_version"].startswith("2.") and info["cuda_archs"]
    else:
        assert info["cuda_version"] is None and info["cuda_archs"] == []
    expect = os.environ.get("CODEXT_EXPECT_CUDA")
    if expect is not None:
        assert info["cuda"] is (expect == "1")


def test_thread_count_is_settable_and_validated():
    before = codext.get_num_threads()
    try:
        codext.set_num_threads(1)
        assert codext.get_num_threads() == 1
        codext.set_num_threads(3)
        assert codext.get_num_threads() == 3
    finally:
        codext.set_num_threads(before)
    with pytest.raises(ValueError, match="num_threads"):
        codext.set_num_threads(0)


def test_thread_count_from_environment():
    out = subprocess.run([sys.executable, "-c", "import codext; print(codext.get_num_threads())"],
                         env={**os.environ, "CODEXT_NUM_THREADS": "3"}, capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "3"


def test_every_op_is_registered():
    assert EXPECTED_OPS <= set(testing.op_names())


def test_unknown_op_and_bad_arguments_raise():
    with pytest.raises(KeyError):
        testing.op("no_such_op", [])
    import numpy as np
    with pytest.raises(ValueError):
        testing.op("gelu", [np.zeros(3, np.float32), np.zeros(3, np.float32)])
    with pytest.raises(TypeError):
        testing.op("gelu", ["not an array"])


def test_engine_survives_fork():
    """A forked child builds its own thread pool (the parent's threads do not exist there)."""
    import numpy as np
    b = codext.Backbone("edgenext_tiny_test")
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    ref = b.forward(x)[3]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            ok = np.array_equal(b.forward(x)[3], ref)
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.waitpid(pid, 0)
    assert got == b"1"
