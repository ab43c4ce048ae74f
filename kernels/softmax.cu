/* Softmax over the last dim on the GPU, host side; x, y, dy, dx [rows, cols] (ops.h).
 * The kernels are in device/softmax.cuh: one warp per row, fp32.
 *   forward:  y = exp(x - max) / sum exp(x - max) (the row maximum subtracted first, as
 *             on the CPU, so no exp overflows);
 *   backward: dx += y * (dy - <dy, y>), with the forward's output y; a NULL dx is skipped.
 * The CPU sums in double; the warp's sums (32 strided chains, then a butterfly) are
 * fp32 and fixed by the shape, which keeps the results within a few ulp of it. */
#include "common.cuh"
#include "device/softmax.cuh"

void cu_softmax_forward(cx_backend *be, int rows, int cols, const float *x, float *y) {
    cu_state *st = cu_get(be);
    if (rows <= 0 || cols <= 0)
        return;
    unsigned blocks = (unsigned)cu_ceil_div((size_t)rows, SOFTMAX_WARPS);
    CX_LAUNCH(softmax_rows_forward_kernel, blocks, 32 * SOFTMAX_WARPS, 0, st->stream)(
        rows, cols, x, y);
    cu_ok_launch(st, "softmax_forward");
}

void cu_softmax_backward(cx_backend *be, int rows, int cols, const float *y, const float *dy,
                         float *dx) {
    cu_state *st = cu_get(be);
    if (!dx || rows <= 0 || cols <= 0)
        return;
    unsigned blocks = (unsigned)cu_ceil_div((size_t)rows, SOFTMAX_WARPS);
    CX_LAUNCH(softmax_rows_backward_kernel, blocks, 32 * SOFTMAX_WARPS, 0, st->stream)(
        rows, cols, y, dy, dx);
    cu_ok_launch(st, "softmax_backward");
}
