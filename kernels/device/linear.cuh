/* Linear-layer kernels (device code; launched by kernels/linear.cu, where cuBLAS does
 * the products). */
#ifndef CX_KERNELS_DEVICE_LINEAR_CUH
#define CX_KERNELS_DEVICE_LINEAR_CUH

#include "helpers.cuh"

// nvrtc-check: hot add_row_bias_kernel

/* y [rows, out_features] += bias[out_features] broadcast over rows; grid-stride over
 * n = rows * out_features */
__global__ void add_row_bias_kernel(size_t n, int out_features, const float *bias, float *y) {
    CX_GRID_STRIDE(i, n) { y[i] += bias[i % (size_t)out_features]; }
}

#endif
