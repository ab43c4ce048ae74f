/* Mixed-precision conversions (device code; launched by kernels/precision.cu): float32
 * operands rounded to half or bf16 for the products, and their half (bf16) results
 * widened back to float32. Shapes: src, dst [n], grid-stride over n. */
#ifndef CX_KERNELS_DEVICE_PRECISION_CUH
#define CX_KERNELS_DEVICE_PRECISION_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "helpers.cuh"

// nvrtc-check: hot lower_half_kernel lower_bf16_kernel widen_half_kernel widen_bf16_kernel

/* dst = src rounded to nearest even (overflow to +-inf in half: loss scaling's signal) */
__global__ void lower_half_kernel(size_t n, const float *src, __half *dst) {
    CX_GRID_STRIDE(i, n) { dst[i] = __float2half_rn(src[i]); }
}

__global__ void lower_bf16_kernel(size_t n, const float *src, __nv_bfloat16 *dst) {
    CX_GRID_STRIDE(i, n) { dst[i] = __float2bfloat16_rn(src[i]); }
}

/* dst = (accumulate ? dst : 0) + src, the conversion to float exact */
__global__ void widen_half_kernel(size_t n, const __half *src, float *dst, int accumulate) {
    CX_GRID_STRIDE(i, n) {
        float v = __half2float(src[i]);
        dst[i] = accumulate ? dst[i] + v : v;
    }
}

__global__ void widen_bf16_kernel(size_t n, const __nv_bfloat16 *src, float *dst, int accumulate) {
    CX_GRID_STRIDE(i, n) {
        float v = __bfloat162float(src[i]);
        dst[i] = accumulate ? dst[i] + v : v;
    }
}

#endif
