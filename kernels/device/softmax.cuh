/* Softmax over the last dim (device code; launched by kernels/softmax.cu, which documents
 * the arithmetic): x, y, dy, dx [rows, cols], one warp per row. Lane l takes the columns
 * l, l + 32, ... in order and the lanes' partial sums meet in an xor butterfly, so every
 * result depends on the shape alone, never on the launch or the thread order. */
#ifndef CX_KERNELS_DEVICE_SOFTMAX_CUH
#define CX_KERNELS_DEVICE_SOFTMAX_CUH

#include "helpers.cuh"

// nvrtc-check: hot softmax_rows_forward_kernel softmax_rows_backward_kernel

/* Rows per block: a block is 32 * SOFTMAX_WARPS threads. */
#define SOFTMAX_WARPS 8

static __device__ __forceinline__ float softmax_warp_sum(float v) {
    for (int offset = 16; offset > 0; offset /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

static __device__ __forceinline__ float softmax_warp_max(float v) {
    for (int offset = 16; offset > 0; offset /= 2) {
        float other = __shfl_xor_sync(0xffffffffu, v, offset);
        v = other > v ? other : v;
    }
    return v;
}

/* y = exp(x - max) / sum exp(x - max); y holds exp(x - max) between the passes (each lane
 * rereads only what it wrote). */
__global__ void softmax_rows_forward_kernel(int rows, int cols, const float *x, float *y) {
    const int row = blockIdx.x * SOFTMAX_WARPS + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) /* uniform across the warp */
        return;
    const float *xr = x + (size_t)row * cols;
    float *yr = y + (size_t)row * cols;
    float max_x = xr[0];
    for (int c = lane; c < cols; c += 32)
        max_x = xr[c] > max_x ? xr[c] : max_x;
    max_x = softmax_warp_max(max_x);
    float sum = 0.0f;
    for (int c = lane; c < cols; c += 32) {
        float e = expf(xr[c] - max_x);
        yr[c] = e;
        sum += e;
    }
    sum = softmax_warp_sum(sum);
    for (int c = lane; c < cols; c += 32)
        yr[c] = yr[c] / sum;
}

/* dx += y * (dy - <dy, y>) */
__global__ void softmax_rows_backward_kernel(int rows, int cols, const float *y,
                                             const float *dy, float *dx) {
    const int row = blockIdx.x * SOFTMAX_WARPS + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows)
        return;
    const size_t base = (size_t)row * cols;
    float dot = 0.0f;
    for (int c = lane; c < cols; c += 32)
        dot += dy[base + c] * y[base + c];
    dot = softmax_warp_sum(dot);
    for (int c = lane; c < cols; c += 32)
        dx[base + c] += y[base + c] * (dy[base + c] - dot);
}

#endif
