/* Bilinear resizing on the GPU, host side: PyTorch's interpolate(mode='bilinear',
 * align_corners=False) without antialiasing, up and down; shapes in ops.h, the kernels in
 * device/resize.cuh.
 *
 * Same semantics and arithmetic as cpu/resize.c: per axis (in -> out), in float,
 *   scale = in / out, src = max(scale * (o + 0.5) - 0.5, 0)
 *   i0 = min(floor(src), in - 1), i1 = i0 + (i0 < in - 1), l1 = clamp(src - i0, 0, 1), l0 = 1 - l1
 * (in == out: the identity), y = l0h * (l0w x[i0h,i0w] + l1w x[i0h,i1w]) + l1h * (...).
 * The kernels round every operation as the CPU does (no FMA contraction), so on the same
 * inputs they give the CPU's bits (the emulator shows it; a GPU's float operations are
 * IEEE too).
 *
 * Forward: one thread per output element. Backward (dx += ..., nothing when dx is NULL)
 * in two gathers, as the CPU organises it, each element written by one thread in a fixed
 * order (no atomics):
 *   1. rows [planes, in_h, out_w] = sum over output rows oh reading input row i of
 *      weight(oh, i) * dy[oh, :]                       (scratch slot 0)
 *   2. dx[i, j] += sum over output columns ow reading input column j of l * rows[i, ow]. */
#include "common.cuh"
#include "device/resize.cuh"

void cu_resize_bilinear_forward(cx_backend *be, const cx_pool_shape *s, const float *x,
                                float *y) {
    cu_state *st = cu_get(be);
    if (s->planes <= 0 || s->out_h <= 0 || s->out_w <= 0 || s->in_h <= 0 || s->in_w <= 0)
        return;
    size_t n = (size_t)s->planes * (size_t)s->out_h * (size_t)s->out_w;
    CX_LAUNCH(resize_bilinear_forward_kernel, cu_blocks(n, CU_BLOCK), CU_BLOCK, 0, st->stream)(
        n, s->in_h, s->in_w, s->out_h, s->out_w, x, y);
    cu_ok_launch(st, "resize_bilinear_forward");
}

void cu_resize_bilinear_backward(cx_backend *be, const cx_pool_shape *s, const float *dy,
                                 float *dx) {
    cu_state *st = cu_get(be);
    if (!dx || s->planes <= 0 || s->out_h <= 0 || s->out_w <= 0 || s->in_h <= 0 ||
        s->in_w <= 0)
        return;
    size_t n_rows = (size_t)s->planes * (size_t)s->in_h * (size_t)s->out_w;
    float *rows = cu_scratch(st, 0, n_rows);
    if (!rows)
        return;
    CX_LAUNCH(resize_bilinear_backward_rows_kernel, cu_blocks(n_rows, CU_BLOCK), CU_BLOCK, 0,
              st->stream)(n_rows, s->in_h, s->out_h, s->out_w, dy, rows);
    if (!cu_ok_launch(st, "resize_bilinear_backward (rows)"))
        return;
    size_t n = (size_t)s->planes * (size_t)s->in_h * (size_t)s->in_w;
    CX_LAUNCH(resize_bilinear_backward_cols_kernel, cu_blocks(n, CU_BLOCK), CU_BLOCK, 0,
              st->stream)(n, s->in_w, s->out_w, rows, dx);
    cu_ok_launch(st, "resize_bilinear_backward");
}
