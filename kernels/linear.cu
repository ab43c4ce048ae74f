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
 * dbias is a fixed-order column sum of dy (reduce.cu). Under mixed precision (FP16, BF16)
 * both operands of each product are rounded to half (bf16) first and cublasGemmEx
 * multiplies them with float32 accumulation into the float32 result (tensor cores where
 * the GPU has them; precision.cu). With CODEXT_CUDA_GEMM=own every product runs on our
 * own kernel instead (device/gemm.cuh: same arguments, same operands, float sums). Host
 * side; the bias kernel is in device/linear.cuh. */
#include "common.cuh"
#include "device/gemm.cuh"
#include "device/linear.cuh"

/* Our GEMM (device/gemm.cuh) in cuBLAS's arguments; a and b are float or the half copies. */
template <typename T>
static int own_gemm(cu_state *st, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                    int k, const T *a, int lda, const T *b, int ldb, float beta, float *c,
                    int ldc, const char *what) {
    int tiles_n = (n + GEMM_TILE - 1) / GEMM_TILE; /* the kernel loops past gridDim.y */
    dim3 grid((unsigned)((m + GEMM_TILE - 1) / GEMM_TILE), (unsigned)(tiles_n < 65535 ? tiles_n : 65535));
    dim3 block(GEMM_TILE, GEMM_TILE);
    CX_LAUNCH(gemm_tiled_kernel<T>, grid, block, 0, st->stream)(
        ta != CUBLAS_OP_N, tb != CUBLAS_OP_N, m, n, k, a, lda, b, ldb, beta, c, ldc);
    return cu_ok_launch(st, what);
}

int cu_gemm(cu_state *st, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
            const float *A, int lda, size_t a_count, const float *B, int ldb, size_t b_count,
            float beta, float *C, int ldc, int allow_low, const char *what) {
    const float one = 1.0f;
    if (!allow_low || !cu_low_precision(st)) {
        if (st->own_gemm)
            return own_gemm<float>(st, ta, tb, m, n, k, A, lda, B, ldb, beta, C, ldc, what);
        return cu_ok_cublas(st, cublasSgemm(st->cublas, ta, tb, m, n, k, &one, A, lda, B, ldb,
                                            &beta, C, ldc), what);
    }
    const void *a_low = cu_lowered(st, CU_SLOT_LOW_A, A, a_count);
    const void *b_low = a_low ? cu_lowered(st, CU_SLOT_LOW_B, B, b_count) : NULL;
    if (!b_low)
        return 0;
    if (st->own_gemm && st->precision == CX_PRECISION_FP16)
        return own_gemm<__half>(st, ta, tb, m, n, k, (const __half *)a_low, lda,
                                (const __half *)b_low, ldb, beta, C, ldc, what);
    if (st->own_gemm)
        return own_gemm<__nv_bfloat16>(st, ta, tb, m, n, k, (const __nv_bfloat16 *)a_low, lda,
                                       (const __nv_bfloat16 *)b_low, ldb, beta, C, ldc, what);
    cudaDataType low = cu_low_blas_type(st);
    return cu_ok_cublas(st, cublasGemmEx(st->cublas, ta, tb, m, n, k, &one, a_low, low, lda,
                                         b_low, low, ldb, &beta, C, CUDA_R_32F, ldc,
                                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT), what);
}

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
        if (!cu_gemm(st, CUBLAS_OP_T, CUBLAS_OP_N, out_features, rows, in_features, w,
                  in_features, (size_t)out_features * in_features, x, in_features,
                  (size_t)rows * in_features, 0.0f, y, out_features, 1, "linear_forward (gemm)"))
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
    size_t w_count = (size_t)out_features * in_features, x_count = (size_t)rows * in_features;
    size_t dy_count = (size_t)rows * out_features;
    if (dx && in_features > 0 &&
        !cu_gemm(st, CUBLAS_OP_N, CUBLAS_OP_N, in_features, rows, out_features, w, in_features,
              w_count, dy, out_features, dy_count, 1.0f, dx, in_features, 1,
              "linear_backward dx (gemm)"))
        return;
    if (dw && in_features > 0 &&
        !cu_gemm(st, CUBLAS_OP_N, CUBLAS_OP_T, in_features, out_features, rows, x, in_features,
              x_count, dy, out_features, dy_count, 1.0f, dw, in_features, 1,
              "linear_backward dw (gemm)"))
        return;
    if (dbias)
        cu_column_sums(st, rows, out_features, dy, NULL, NULL, dbias, NULL);
}
