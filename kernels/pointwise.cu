/* Pointwise ops on the GPU; x, y, a, b, dy, dx [n] (ops.h). Grid-stride loops, one
 * element per thread per step; backward ops accumulate (+=) and skip NULL gradients.
 * Each element is computed on its own, so the results do not depend on the launch. */
#include "common.cuh"

#define GRID_STRIDE(i, n)                                                                   \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                 \
         i += (size_t)blockDim.x * gridDim.x)

/* GELU, exact erf form: y = x * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2;
 * dy/dx = Phi(x) + x * phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi). */
__global__ void gelu_forward_kernel(size_t n, const float *x, float *y) {
    GRID_STRIDE(i, n) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    }
}

__global__ void gelu_backward_kernel(size_t n, const float *x, const float *dy, float *dx) {
    GRID_STRIDE(i, n) {
        float v = x[i];
        float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * expf(-0.5f * v * v);
        dx[i] += dy[i] * (cdf + v * pdf);
    }
}

/* sigmoid; its backward uses the forward output: dx += dy * y * (1 - y) */
__global__ void sigmoid_forward_kernel(size_t n, const float *x, float *y) {
    GRID_STRIDE(i, n) { y[i] = 1.0f / (1.0f + expf(-x[i])); }
}

__global__ void sigmoid_backward_kernel(size_t n, const float *y, const float *dy, float *dx) {
    GRID_STRIDE(i, n) {
        float s = y[i];
        dx[i] += dy[i] * s * (1.0f - s);
    }
}

__global__ void add_kernel(size_t n, const float *a, const float *b, float *y) {
    GRID_STRIDE(i, n) { y[i] = a[i] + b[i]; }
}

__global__ void axpy_kernel(size_t n, float alpha, const float *x, float *y) {
    GRID_STRIDE(i, n) { y[i] += alpha * x[i]; }
}

__global__ void mul_forward_kernel(size_t n, const float *a, const float *b, float *y) {
    GRID_STRIDE(i, n) { y[i] = a[i] * b[i]; }
}

/* da += dy * b, db += dy * a; either may be NULL */
__global__ void mul_backward_kernel(size_t n, const float *a, const float *b, const float *dy,
                                    float *da, float *db) {
    GRID_STRIDE(i, n) {
        float g = dy[i];
        if (da)
            da[i] += g * b[i];
        if (db)
            db[i] += g * a[i];
    }
}

__global__ void affine_kernel(size_t n, float alpha, float beta, const float *x, float *y) {
    GRID_STRIDE(i, n) { y[i] = alpha * x[i] + beta; }
}

#define LAUNCH(kernel, name, n, ...)                                                        \
    do {                                                                                    \
        cu_state *st_ = cu_get(be);                                                         \
        kernel<<<cu_blocks((n), CU_BLOCK), CU_BLOCK, 0, st_->stream>>>((n), __VA_ARGS__);   \
        cu_ok_launch(st_, name);                                                            \
    } while (0)

void cu_gelu_forward(cx_backend *be, size_t n, const float *x, float *y) {
    if (n)
        LAUNCH(gelu_forward_kernel, "gelu_forward", n, x, y);
}

void cu_gelu_backward(cx_backend *be, size_t n, const float *x, const float *dy, float *dx) {
    if (n && dx)
        LAUNCH(gelu_backward_kernel, "gelu_backward", n, x, dy, dx);
}

void cu_sigmoid_forward(cx_backend *be, size_t n, const float *x, float *y) {
    if (n)
        LAUNCH(sigmoid_forward_kernel, "sigmoid_forward", n, x, y);
}

void cu_sigmoid_backward(cx_backend *be, size_t n, const float *y, const float *dy, float *dx) {
    if (n && dx)
        LAUNCH(sigmoid_backward_kernel, "sigmoid_backward", n, y, dy, dx);
}

void cu_add(cx_backend *be, size_t n, const float *a, const float *b, float *y) {
    if (n)
        LAUNCH(add_kernel, "add", n, a, b, y);
}

void cu_axpy(cx_backend *be, size_t n, float alpha, const float *x, float *y) {
    if (n)
        LAUNCH(axpy_kernel, "axpy", n, alpha, x, y);
}

void cu_mul_forward(cx_backend *be, size_t n, const float *a, const float *b, float *y) {
    if (n)
        LAUNCH(mul_forward_kernel, "mul_forward", n, a, b, y);
}

void cu_mul_backward(cx_backend *be, size_t n, const float *a, const float *b,
                     const float *dy, float *da, float *db) {
    if (n && (da || db))
        LAUNCH(mul_backward_kernel, "mul_backward", n, a, b, dy, da, db);
}

void cu_affine(cx_backend *be, size_t n, float alpha, float beta, const float *x, float *y) {
    if (n)
        LAUNCH(affine_kernel, "affine", n, alpha, beta, x, y);
}
