"""GFLOP/s of codext's CPU GEMM against numpy.matmul on the shapes EdgeNeXt-base needs at
352 x 352, batch 8 (informational; not a test).

    python bench/gemm.py [--threads N] [--repeat R] [--small]

Our timings go through codext._testing.op("gemm", [A, B], ...) (a test build:
CODEXT_TEST_BUILD=1), which allocates a zeroed
output and runs the product with beta = 0; numpy.matmul allocates its output too. numpy uses its own BLAS with its own thread count, so compare
at equal thread counts (set OPENBLAS_NUM_THREADS / OMP_NUM_THREADS for numpy).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import codext  # noqa: E402
from codext import _testing  # noqa: E402  (CODEXT_TEST_BUILD=1 builds it)

ROWS = 8 * 88 * 88  # stage-1 tokens of EdgeNeXt-base at 352 x 352, batch 8

# (name, trans_a, trans_b, M, N, K)
SHAPES = [
    ("stage1 fc1  x w^T", 0, 1, ROWS, 320, 80),
    ("stage1 fc2  x w^T", 0, 1, ROWS, 80, 320),
    ("stage1 fc1  dx = dy w", 0, 0, ROWS, 80, 320),
    ("stage1 fc2  dx = dy w", 0, 0, ROWS, 320, 80),
    ("stage1 fc1  dw = dy^T x", 1, 0, 320, 80, ROWS),
    ("stage1 fc2  dw = dy^T x", 1, 0, 80, 320, ROWS),
    ("stage4 fc1  x w^T", 0, 1, 8 * 11 * 11, 2336, 584),
    ("stage4 fc1  dw = dy^T x", 1, 0, 2336, 584, 8 * 11 * 11),
    ("1x1 conv 64->64 (88x88)", 0, 0, 64, 88 * 88, 64),
    ("3x3 conv 128->64 as GEMM", 0, 0, 64, 88 * 88, 1152),
]


def best_time(fn, repeat):
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="codext threads (default: all)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--small", action="store_true", help="divide the large dimension by 8")
    args = parser.parse_args()
    if args.threads:
        codext.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"codext threads: {codext.get_num_threads()} (CODEXT_GEMM_KERNEL=avx2|generic caps "
          f"the micro-kernels)")
    print(f"{'shape':28s} {'M':>7s} {'N':>6s} {'K':>7s} {'codext':>9s} {'numpy':>9s}  GFLOP/s")
    for name, ta, tb, M, N, K in SHAPES:
        if args.small:
            M, N, K = [v // 8 if v == max(M, N, K) else v for v in (M, N, K)]
        A = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
        B = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
        a_op = A.T if ta else A
        b_op = B.T if tb else B
        ours = best_time(lambda: _testing.op("gemm", [A, B], [ta, tb], [1.0, 0.0]), args.repeat)
        theirs = best_time(lambda: np.matmul(a_op, b_op), args.repeat)
        flop = 2.0 * M * N * K
        print(f"{name:28s} {M:7d} {N:6d} {K:7d} {flop / ours * 1e-9:9.1f} "
              f"{flop / theirs * 1e-9:9.1f}")


if __name__ == "__main__":
    main()
