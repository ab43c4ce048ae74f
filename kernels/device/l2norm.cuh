/* L2 normalisation over the last dim (device code; launched by kernels/l2norm.cu, which
 * documents the math and the saved buffer): x, y, dy, dx [rows, cols], saved [rows], one
 * warp per row. Lane l takes the columns l, l + 32, ... in order and the lanes' partial
 * sums meet in an xor butterfly: results depend on the shape alone. */
#ifndef CX_KERNELS_DEVICE_L2NORM_CUH
#define CX_KERNELS_DEVICE_L2NORM_CUH

#include "helpers.cuh"

// nvrtc-check: hot l2norm_forward_kernel l2norm_backward_kernel

/* Rows per block: a block is 32 * L2NORM_WARPS threads. */
#define L2NORM_WARPS 8

static __device__ __forceinline__ float l2norm_warp_sum(float v) {
    for (int offset = 16; offset > 0; offset /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

/* y = x / max(||x||, eps); saved[row] = ||x|| (not clamped) */
__global__ void l2norm_forward_kernel(int rows, int cols, float eps, const float *x, float *y,
                                      float *saved) {
    const int row = blockIdx.x * L2NORM_WARPS + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) /* uniform across the warp */
        return;
    const float *xr = x + (size_t)row * cols;
    float *yr = y + (size_t)row * cols;
    float sum_sq = 0.0f;
    for (int c = lane; c < cols; c += 32)
        sum_sq += xr[c] * xr[c];
    const float norm = sqrtf(l2norm_warp_sum(sum_sq));
    const float denom = norm > eps ? norm : eps;
    for (int c = lane; c < cols; c += 32)
        yr[c] = xr[c] / denom;
    if (lane == 0)
        saved[row] = norm;
}

/* norm = saved[row] >= eps: dx += (dy - x <x, dy> / norm^2) / norm; else dx += dy / eps */
__global__ void l2norm_backward_kernel(int rows, int cols, float eps, const float *x,
                                       const float *saved, const float *dy, float *dx) {
    const int row = blockIdx.x * L2NORM_WARPS + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows)
        return;
    const size_t base = (size_t)row * cols;
    const float norm = saved[row];
    if (norm >= eps) { /* uniform across the warp */
        float dot = 0.0f;
        for (int c = lane; c < cols; c += 32)
            dot += x[base + c] * dy[base + c];
        const float proj = l2norm_warp_sum(dot) / norm / norm;
        for (int c = lane; c < cols; c += 32)
            dx[base + c] += (dy[base + c] - x[base + c] * proj) / norm;
    } else {
        for (int c = lane; c < cols; c += 32)
            dx[base + c] += dy[base + c] / eps;
    }
}

#endif
