/* LayerNorm over the last dim (rows x cols, one warp per row) and LayerNorm2d over the
 * channels of each NCHW pixel (one thread per pixel), fp32 throughout; shapes in ops.h.
 * The variance is computed in two passes (mean first) as the CPU backend does.
 * saved layout (both ops): [2, n] = mean[n] then rstd[n] = 1/sqrt(var + eps), with
 * n = rows, or n = batch*hw indexed b*hw + p.
 * Backward: dx += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = weight * dy;
 * dweight += sum dy * xhat, dbias += sum dy over rows (pixels), by the fixed-order
 * reductions of reduce.cu. A NULL weight counts as ones, a NULL bias as zeros. */
#include "common.cuh"

#define WARPS_PER_BLOCK 8

/* Sum over the 32 lanes by an xor butterfly: every lane adds the same two operands at
 * each step, so all lanes end with the same, launch-independent, value. */
__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

/* x, y [rows, cols]; weight, bias [cols]; saved [2, rows] */
__global__ void layernorm_forward_kernel(int rows, int cols, float eps, const float *x,
                                         const float *weight, const float *bias, float *y,
                                         float *saved) {
    int row = blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) /* uniform across the warp */
        return;
    const float *xr = x + (size_t)row * cols;
    float *yr = y + (size_t)row * cols;
    float sum = 0.0f;
    for (int c = lane; c < cols; c += 32)
        sum += xr[c];
    float mean = warp_sum(sum) / (float)cols;
    float sum_sq = 0.0f;
    for (int c = lane; c < cols; c += 32) {
        float d = xr[c] - mean;
        sum_sq += d * d;
    }
    float var = warp_sum(sum_sq) / (float)cols;
    float rstd = 1.0f / sqrtf(var + eps);
    for (int c = lane; c < cols; c += 32) {
        float xhat = (xr[c] - mean) * rstd;
        yr[c] = xhat * (weight ? weight[c] : 1.0f) + (bias ? bias[c] : 0.0f);
    }
    if (lane == 0) {
        saved[row] = mean;
        saved[rows + row] = rstd;
    }
}

/* dx [rows, cols] += ... (the per-row part of the backward) */
__global__ void layernorm_backward_dx_kernel(int rows, int cols, const float *x,
                                             const float *weight, const float *saved,
                                             const float *dy, float *dx) {
    int row = blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows)
        return;
    size_t base = (size_t)row * cols;
    float mean = saved[row], rstd = saved[rows + row];
    float sum_g = 0.0f, sum_g_xhat = 0.0f;
    for (int c = lane; c < cols; c += 32) {
        float g = dy[base + c] * (weight ? weight[c] : 1.0f);
        sum_g += g;
        sum_g_xhat += g * (x[base + c] - mean) * rstd;
    }
    float mean_g = warp_sum(sum_g) / (float)cols;
    float mean_g_xhat = warp_sum(sum_g_xhat) / (float)cols;
    for (int c = lane; c < cols; c += 32) {
        float g = dy[base + c] * (weight ? weight[c] : 1.0f);
        float xhat = (x[base + c] - mean) * rstd;
        dx[base + c] += rstd * (g - mean_g - xhat * mean_g_xhat);
    }
}

/* x, y [batch, channels, hw]; saved [2, batch*hw]; thread = pixel b*hw + p */
__global__ void layernorm2d_forward_kernel(int batch, int channels, int hw, float eps,
                                           const float *x, const float *weight,
                                           const float *bias, float *y, float *saved) {
    size_t n_pixels = (size_t)batch * hw;
    for (size_t pixel = (size_t)blockIdx.x * blockDim.x + threadIdx.x; pixel < n_pixels;
         pixel += (size_t)blockDim.x * gridDim.x) {
        size_t b = pixel / hw, p = pixel % hw;
        size_t base = b * channels * hw + p;
        float sum = 0.0f;
        for (int c = 0; c < channels; c++)
            sum += x[base + (size_t)c * hw];
        float mean = sum / (float)channels;
        float sum_sq = 0.0f;
        for (int c = 0; c < channels; c++) {
            float d = x[base + (size_t)c * hw] - mean;
            sum_sq += d * d;
        }
        float rstd = 1.0f / sqrtf(sum_sq / (float)channels + eps);
        for (int c = 0; c < channels; c++) {
            size_t at = base + (size_t)c * hw;
            y[at] = (x[at] - mean) * rstd * (weight ? weight[c] : 1.0f) + (bias ? bias[c] : 0.0f);
        }
        saved[pixel] = mean;
        saved[n_pixels + pixel] = rstd;
    }
}

__global__ void layernorm2d_backward_dx_kernel(int batch, int channels, int hw, const float *x,
                                               const float *weight, const float *saved,
                                               const float *dy, float *dx) {
    size_t n_pixels = (size_t)batch * hw;
    for (size_t pixel = (size_t)blockIdx.x * blockDim.x + threadIdx.x; pixel < n_pixels;
         pixel += (size_t)blockDim.x * gridDim.x) {
        size_t b = pixel / hw, p = pixel % hw;
        size_t base = b * channels * hw + p;
        float mean = saved[pixel], rstd = saved[n_pixels + pixel];
        float sum_g = 0.0f, sum_g_xhat = 0.0f;
        for (int c = 0; c < channels; c++) {
            size_t at = base + (size_t)c * hw;
            float g = dy[at] * (weight ? weight[c] : 1.0f);
            sum_g += g;
            sum_g_xhat += g * (x[at] - mean) * rstd;
        }
        float mean_g = sum_g / (float)channels, mean_g_xhat = sum_g_xhat / (float)channels;
        for (int c = 0; c < channels; c++) {
            size_t at = base + (size_t)c * hw;
            float g = dy[at] * (weight ? weight[c] : 1.0f);
            float xhat = (x[at] - mean) * rstd;
            dx[at] += rstd * (g - mean_g - xhat * mean_g_xhat);
        }
    }
}

void cu_layernorm_forward(cx_backend *be, int rows, int cols, float eps, const float *x,
                          const float *weight, const float *bias, float *y, float *saved) {
    cu_state *st = cu_get(be);
    if (rows <= 0 || cols <= 0)
        return;
    unsigned blocks = (unsigned)cu_ceil_div((size_t)rows, WARPS_PER_BLOCK);
    layernorm_forward_kernel<<<blocks, 32 * WARPS_PER_BLOCK, 0, st->stream>>>(
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
        layernorm_backward_dx_kernel<<<blocks, 32 * WARPS_PER_BLOCK, 0, st->stream>>>(
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
    layernorm2d_forward_kernel<<<cu_blocks(n_pixels, CU_BLOCK), CU_BLOCK, 0, st->stream>>>(
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
        layernorm2d_backward_dx_kernel<<<cu_blocks(n_pixels, CU_BLOCK), CU_BLOCK, 0,
                                         st->stream>>>(batch, channels, hw, x, weight, saved,
                                                       dy, dx);
        if (!cu_ok_launch(st, "layernorm2d_backward"))
            return;
    }
    cu_channel_sums(st, batch, channels, hw, dy, x, saved, dbias, dweight);
}
