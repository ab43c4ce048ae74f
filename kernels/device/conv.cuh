/* Convolution kernels (device code; launched by kernels/conv.cu, where cuDNN does the
 * convolutions themselves). */
#ifndef CX_KERNELS_DEVICE_CONV_CUH
#define CX_KERNELS_DEVICE_CONV_CUH

#include "helpers.cuh"

// nvrtc-check: hot add_channel_bias_kernel

/* y [batch, channels, hw] += bias[channels]; grid-stride over n = batch * channels * hw */
__global__ void add_channel_bias_kernel(size_t n, int channels, int hw, const float *bias,
                                        float *y) {
    CX_GRID_STRIDE(i, n) { y[i] += bias[(i / (size_t)hw) % (size_t)channels]; }
}

#endif
