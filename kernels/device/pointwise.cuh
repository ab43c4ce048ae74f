/* Pointwise kernels (device code; launched by kernels/pointwise.cu). x, y, a, b, dy, dx
 * [n]; grid-stride loops, one element per thread per step; backward kernels accumulate
 * (+=). Each element is computed on its own, so the results do not depend on the launch. */
#ifndef CX_KERNELS_DEVICE_POINTWISE_CUH
#define CX_KERNELS_DEVICE_POINTWISE_CUH

#include "helpers.cuh"

// nvrtc-check: hot gelu_forward_kernel gelu_backward_kernel sigmoid_forward_kernel
// nvrtc-check: hot sigmoid_backward_kernel add_kernel axpy_kernel mul_forward_kernel
// nvrtc-check: hot mul_backward_kernel affine_kernel

/* GELU, exact form: y = x * Phi(x), Phi(x) = erfc(-x / sqrt 2) / 2 (= (1 + erf(x / sqrt 2))
 * / 2, but without its cancellation: for x = -5, 1 + erf loses about 20 % of Phi's 2.9e-7
 * in float; erfc keeps full relative accuracy in both tails, as the CPU's form does);
 * dy/dx = Phi(x) + x * phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi). */
__global__ void gelu_forward_kernel(size_t n, const float *x, float *y) {
    CX_GRID_STRIDE(i, n) {
        float v = x[i];
        y[i] = 0.5f * v * erfcf(v * -0.70710678118654752f);
    }
}

__global__ void gelu_backward_kernel(size_t n, const float *x, const float *dy, float *dx) {
    CX_GRID_STRIDE(i, n) {
        float v = x[i];
        float cdf = 0.5f * erfcf(v * -0.70710678118654752f);
        float pdf = 0.39894228040143268f * expf(-0.5f * v * v);
        dx[i] += dy[i] * (cdf + v * pdf);
    }
}

/* sigmoid; its backward uses the forward output: dx += dy * y * (1 - y) */
__global__ void sigmoid_forward_kernel(size_t n, const float *x, float *y) {
    CX_GRID_STRIDE(i, n) { y[i] = 1.0f / (1.0f + expf(-x[i])); }
}

__global__ void sigmoid_backward_kernel(size_t n, const float *y, const float *dy, float *dx) {
    CX_GRID_STRIDE(i, n) {
        float s = y[i];
        dx[i] += dy[i] * s * (1.0f - s);
    }
}

__global__ void add_kernel(size_t n, const float *a, const float *b, float *y) {
    CX_GRID_STRIDE(i, n) { y[i] = a[i] + b[i]; }
}

__global__ void axpy_kernel(size_t n, float alpha, const float *x, float *y) {
    CX_GRID_STRIDE(i, n) { y[i] += alpha * x[i]; }
}

__global__ void mul_forward_kernel(size_t n, const float *a, const float *b, float *y) {
    CX_GRID_STRIDE(i, n) { y[i] = a[i] * b[i]; }
}

/* da += dy * b, db += dy * a; either may be null */
__global__ void mul_backward_kernel(size_t n, const float *a, const float *b, const float *dy,
                                    float *da, float *db) {
    CX_GRID_STRIDE(i, n) {
        float g = dy[i];
        if (da)
            da[i] += g * b[i];
        if (db)
            db[i] += g * a[i];
    }
}

__global__ void affine_kernel(size_t n, float alpha, float beta, const float *x, float *y) {
    CX_GRID_STRIDE(i, n) { y[i] = alpha * x[i] + beta; }
}

#endif
