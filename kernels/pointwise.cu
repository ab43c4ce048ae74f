/* Pointwise ops on the GPU, host side; x, y, a, b, dy, dx [n] (ops.h). The kernels are in
 * device/pointwise.cuh. Backward ops accumulate (+=) and skip NULL gradients. */
#include "common.cuh"
#include "device/pointwise.cuh"

#define LAUNCH(kernel, name, n, ...)                                                        \
    do {                                                                                    \
        cu_state *st_ = cu_get(be);                                                         \
        CX_LAUNCH(kernel, cu_blocks((n), CU_BLOCK), CU_BLOCK, 0, st_->stream)(              \
            (n), __VA_ARGS__);                                                              \
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
