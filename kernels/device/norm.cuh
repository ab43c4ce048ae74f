/* LayerNorm kernels (device code; launched by kernels/norm.cu, which documents the math
 * and the saved layout): LayerNorm over the last dim (one warp per row of x [rows, cols])
 * and LayerNorm2d over the channels of each NCHW pixel (one thread per pixel). */
#ifndef CX_KERNELS_DEVICE_NORM_CUH
#define CX_KERNELS_DEVICE_NORM_CUH

#include "helpers.cuh"

// nvrtc-check: hot layernorm_forward_kernel layernorm_backward_dx_kernel
// nvrtc-check: hot layernorm2d_forward_kernel layernorm2d_backward_dx_kernel

/* Rows per block of the row kernels: a block is 32 * WARPS_PER_BLOCK threads. */
#define WARPS_PER_BLOCK 8

/* Sum over the 32 lanes by an xor butterfly: every lane adds the same two operands at
 * each step, so all lanes end with the same, launch-independent, value. */
static __device__ __forceinline__ float warp_sum(float v) {
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

#endif
