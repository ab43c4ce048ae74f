/* L2 normalisation over the last dim on the GPU, host side (ops.h); the kernels are in
 * device/l2norm.cuh (one warp per row, fp32).
 *   forward:  y = x / max(||x||_2, eps); saved [rows] = ||x||_2, the norm itself (not
 *             clamped), as the CPU backend saves it;
 *   backward: with norm = saved[row]: if norm >= eps, dx += (dy - x <x, dy> / norm^2) / norm,
 *             else (the clamped case, y = x / eps) dx += dy / eps; a NULL dx is skipped.
 * The CPU sums in double; the warp's fp32 sums (32 strided chains, then a butterfly) are
 * fixed by the shape and stay within a few ulp of it. */
#include "common.cuh"
#include "device/l2norm.cuh"

void cu_l2norm_forward(cx_backend *be, int rows, int cols, float eps, const float *x, float *y,
                       float *saved) {
    cu_state *st = cu_get(be);
    if (rows <= 0 || cols <= 0)
        return;
    unsigned blocks = (unsigned)cu_ceil_div((size_t)rows, L2NORM_WARPS);
    CX_LAUNCH(l2norm_forward_kernel, blocks, 32 * L2NORM_WARPS, 0, st->stream)(
        rows, cols, eps, x, y, saved);
    cu_ok_launch(st, "l2norm_forward");
}

void cu_l2norm_backward(cx_backend *be, int rows, int cols, float eps, const float *x,
                        const float *saved, const float *dy, float *dx) {
    cu_state *st = cu_get(be);
    if (!dx || rows <= 0 || cols <= 0)
        return;
    unsigned blocks = (unsigned)cu_ceil_div((size_t)rows, L2NORM_WARPS);
    CX_LAUNCH(l2norm_backward_kernel, blocks, 32 * L2NORM_WARPS, 0, st->stream)(
        rows, cols, eps, x, saved, dy, dx);
    cu_ok_launch(st, "l2norm_backward");
}
