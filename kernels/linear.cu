/* Linear (PyTorch nn.Linear layout) with cuBLAS; shapes in ops.h:
 *   x [rows, in], w [out, in], bias [out], y [rows, out] = x @ w^T + bias
 *
 * cuBLAS is column-major. A row-major matrix [r, c] read column-major is its transpose
 * [c, r] with leading dimension c, so with X = x^T [in, rows], W = w^T [in, out] and
 * Y = y^T [out, rows] (all column-major, no copies):
 *   forward   Y  = W^T X          sgemm(T, N, m=out, n=rows, k=in)
 *   dx        dX = W dY           sgemm(N, N, m=in,  n=rows, k=out), beta 1
 *   dw        dW = X dY^T         sgemm(N, T, m=in,  n=out,  k=rows), beta 1
 * (dW = dw^T [in, out] is dw [out, in] row-major.) beta = 1 makes the backward
 * accumulate. The handle's math mode is full fp32 unless TF32 was allowed at creation;
 * dbias is a fixed-order column sum of dy (reduce.cu). Host side; the bias kernel is in
 * device/linear.cuh. */
#include "common.cuh"
#include "device/linear.cuh"

void cu_linear_forward(cx_backend *be, int rows, int in_features, int out_features,
                       const float *x, const float *w, const float *bias, float *y) {
    cu_state *st = cu_get(be);
    if (rows <= 0 || out_features <= 0)
        return;
    size_t n = (size_t)rows * out_features;
    if (in_features <= 0) { /* an empty product: y = bias */
        if (!cu_ok_cuda(st, cudaMemsetAsync(y, 0, n * sizeof(float), st->stream),
                        "linear_forward"))
            return;
    } else {
        const float one = 1.0f, zero = 0.0f;
        if (!cu_ok_cublas(st,
                          cublasSgemm(st->cublas, CUBLAS_OP_T, CUBLAS_OP_N, out_features, rows,
                                      in_features, &one, w, in_features, x, in_features, &zero,
                                      y, out_features),
                          "linear_forward (sgemm)"))
            return;
    }
    if (bias) {
        CX_LAUNCH(add_row_bias_kernel, cu_blocks(n, CU_BLOCK), CU_BLOCK, 0, st->stream)(
            n, out_features, bias, y);
        cu_ok_launch(st, "linear_forward (bias)");
    }
}

void cu_linear_backward(cx_backend *be, int rows, int in_features, int out_features,
                        const float *x, const float *w, const float *dy, float *dx, float *dw,
                        float *dbias) {
    cu_state *st = cu_get(be);
    if (rows <= 0 || out_features <= 0)
        return; /* every gradient is an empty sum */
    const float one = 1.0f;
    if (dx && in_features > 0 &&
        !cu_ok_cublas(st,
                      cublasSgemm(st->cublas, CUBLAS_OP_N, CUBLAS_OP_N, in_features, rows,
                                  out_features, &one, w, in_features, dy, out_features, &one,
                                  dx, in_features),
                      "linear_backward dx (sgemm)"))
        return;
    if (dw && in_features > 0 &&
        !cu_ok_cublas(st,
                      cublasSgemm(st->cublas, CUBLAS_OP_N, CUBLAS_OP_T, in_features,
                                  out_features, rows, &one, x, in_features, dy, out_features,
                                  &one, dw, in_features),
                      "linear_backward dw (sgemm)"))
        return;
    if (dbias)
        cu_column_sums(st, rows, out_features, dy, NULL, NULL, dbias, NULL);
}
