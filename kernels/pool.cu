/* Average pooling on the GPU, host side; shapes in ops.h (cx_pool_shape) and op_list.h,
 * the kernels in device/pool.cuh.
 *
 * Same semantics as cpu/pool.c: avgpool2d is PyTorch's AvgPool2d with ceil_mode false
 * (zero padding; the divisor counts the padded window clipped to in + pad with
 * count_include_pad, the part inside the input without; 0 for an empty window);
 * adaptive_avgpool2d uses PyTorch's bins [floor(o*in/out), ceil((o+1)*in/out)); the
 * global pool is the mean over hw. Backward ops accumulate (+=) into dx and do nothing
 * when dx is NULL.
 *
 * One thread per output element (forward) or per dx element (backward: a gather over
 * the outputs whose windows cover the pixel, since windows overlap), summing in an order
 * set by the shape only: no atomics, results independent of the launch. fp32 sums (the
 * CPU sums in double: the two agree to float rounding, about 1e-7 relative for the
 * windows the model uses). No scratch memory. */
#include "common.cuh"
#include "device/pool.cuh"

/* planes * a * b, or 0 when any is not positive */
static size_t pool_count(int planes, int a, int b) {
    if (planes <= 0 || a <= 0 || b <= 0)
        return 0;
    return (size_t)planes * (size_t)a * (size_t)b;
}

void cu_avgpool2d_forward(cx_backend *be, const cx_pool_shape *s, const float *x, float *y) {
    cu_state *st = cu_get(be);
    size_t n = pool_count(s->planes, s->out_h, s->out_w);
    if (!n || s->in_h <= 0 || s->in_w <= 0)
        return;
    CX_LAUNCH(avgpool2d_forward_kernel, cu_blocks(n, CU_BLOCK), CU_BLOCK, 0, st->stream)(
        n, s->in_h, s->in_w, s->out_h, s->out_w, s->k, s->stride, s->pad,
        s->count_include_pad, x, y);
    cu_ok_launch(st, "avgpool2d_forward");
}

void cu_avgpool2d_backward(cx_backend *be, const cx_pool_shape *s, const float *dy, float *dx) {
    cu_state *st = cu_get(be);
    size_t n = pool_count(s->planes, s->in_h, s->in_w);
    if (!dx || !n || s->out_h <= 0 || s->out_w <= 0)
        return;
    CX_LAUNCH(avgpool2d_backward_kernel, cu_blocks(n, CU_BLOCK), CU_BLOCK, 0, st->stream)(
        n, s->in_h, s->in_w, s->out_h, s->out_w, s->k, s->stride, s->pad,
        s->count_include_pad, dy, dx);
    cu_ok_launch(st, "avgpool2d_backward");
}

void cu_adaptive_avgpool2d_forward(cx_backend *be, const cx_pool_shape *s, const float *x,
                                   float *y) {
    cu_state *st = cu_get(be);
    size_t n = pool_count(s->planes, s->out_h, s->out_w);
    if (!n || s->in_h <= 0 || s->in_w <= 0)
        return;
    CX_LAUNCH(adaptive_avgpool2d_forward_kernel, cu_blocks(n, CU_BLOCK), CU_BLOCK, 0,
              st->stream)(n, s->in_h, s->in_w, s->out_h, s->out_w, x, y);
    cu_ok_launch(st, "adaptive_avgpool2d_forward");
}

void cu_adaptive_avgpool2d_backward(cx_backend *be, const cx_pool_shape *s, const float *dy,
                                    float *dx) {
    cu_state *st = cu_get(be);
    size_t n = pool_count(s->planes, s->in_h, s->in_w);
    if (!dx || !n || s->out_h <= 0 || s->out_w <= 0)
        return;
    CX_LAUNCH(adaptive_avgpool2d_backward_kernel, cu_blocks(n, CU_BLOCK), CU_BLOCK, 0,
              st->stream)(n, s->in_h, s->in_w, s->out_h, s->out_w, dy, dx);
    cu_ok_launch(st, "adaptive_avgpool2d_backward");
}

void cu_global_avgpool_forward(cx_backend *be, int planes, int hw, const float *x, float *y) {
    cu_state *st = cu_get(be);
    if (planes <= 0 || hw <= 0)
        return;
    CX_LAUNCH(global_avgpool_forward_kernel, cu_blocks((size_t)planes, GLOBAL_POOL_WARPS),
              32 * GLOBAL_POOL_WARPS, 0, st->stream)(planes, hw, x, y);
    cu_ok_launch(st, "global_avgpool_forward");
}

void cu_global_avgpool_backward(cx_backend *be, int planes, int hw, const float *dy, float *dx) {
    cu_state *st = cu_get(be);
    size_t n = pool_count(planes, hw, 1);
    if (!dx || !n)
        return;
    CX_LAUNCH(global_avgpool_backward_kernel, cu_blocks(n, CU_BLOCK), CU_BLOCK, 0, st->stream)(
        n, hw, dy, dx);
    cu_ok_launch(st, "global_avgpool_backward");
}
