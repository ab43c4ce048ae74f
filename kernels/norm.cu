/* LayerNorm over the last dim (rows x cols, one warp per row) and LayerNorm2d over the
 * channels of each NCHW pixel (one thread per pixel), fp32 throughout; shapes in ops.h.
 * The variance is computed in two passes (mean first) as the CPU backend does.
 * saved layout (both ops): [2, n] = mean[n] then rstd[n] = 1/sqrt(var + eps), with
 * n = rows, or n = batch*hw indexed b*hw + p.
 * Backward: dx += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = weight * dy;
 * dweight += sum dy * xhat, dbias += sum dy over rows (pixels), by the fixed-order
 * reductions of reduce.cu. A NULL weight counts as ones, a NULL bias as zeros.
 * This file is the host side; the kernels are in device/norm.cuh. */
#include "common.cuh"
#include "device/norm.cuh"

void cu_layernorm_forward(cx_backend *be, int rows, int cols, float eps, const float *x,
                          const float *weight, const float *bias, float *y, float *saved) {
    cu_state *st = cu_get(be);
    if (rows <= 0 || cols <= 0)
        return;
    unsigned blocks = (unsigned)cu_ceil_div((size_t)rows, WARPS_PER_BLOCK);
    CX_LAUNCH(layernorm_forward_kernel, blocks, 32 * WARPS_PER_BLOCK, 0, st->stream)(
        rows, cols, eps, x, weight, bias, y, saved);
    cu_ok_launch(st, "layernorm_forward");
}

void cu_layernorm_backward(cx_backend *be, int rows, int cols, const float *x,
                           const float *weight, const float *saved, const float *dy,
                           float *dx, float *dweight, float *dbias) {
    cu_state *st = cu_get(be);
    if (rows <= 0 || cols <= 0)
        return;
    if (dx) {
        unsigned blocks = (unsigned)cu_ceil_div((size_t)rows, WARPS_PER_BLOCK);
        CX_LAUNCH(layernorm_backward_dx_kernel, blocks, 32 * WARPS_PER_BLOCK, 0, st->stream)(
            rows, cols, x, weight, saved, dy, dx);
        if (!cu_ok_launch(st, "layernorm_backward"))
            return;
    }
    cu_column_sums(st, rows, cols, dy, x, saved, dbias, dweight);
}

void cu_layernorm2d_forward(cx_backend *be, int batch, int channels, int hw, float eps,
                            const float *x, const float *weight, const float *bias, float *y,
                            float *saved) {
    cu_state *st = cu_get(be);
    size_t n_pixels = (size_t)batch * (size_t)hw;
    if (batch <= 0 || hw <= 0 || channels <= 0)
        return;
    CX_LAUNCH(layernorm2d_forward_kernel, cu_blocks(n_pixels, CU_BLOCK), CU_BLOCK, 0, st->stream)(
        batch, channels, hw, eps, x, weight, bias, y, saved);
    cu_ok_launch(st, "layernorm2d_forward");
}

void cu_layernorm2d_backward(cx_backend *be, int batch, int channels, int hw, const float *x,
                             const float *weight, const float *saved, const float *dy,
                             float *dx, float *dweight, float *dbias) {
    cu_state *st = cu_get(be);
    size_t n_pixels = (size_t)batch * (size_t)hw;
    if (batch <= 0 || hw <= 0 || channels <= 0)
        return;
    if (dx) {
        CX_LAUNCH(layernorm2d_backward_dx_kernel, cu_blocks(n_pixels, CU_BLOCK), CU_BLOCK, 0,
                  st->stream)(batch, channels, hw, x, weight, saved, dy, dx);
        if (!cu_ok_launch(st, "layernorm2d_backward"))
            return;
    }
    cu_channel_sums(st, batch, channels, hw, dy, x, saved, dbias, dweight);
}
