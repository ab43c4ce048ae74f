/* The emulated cuBLAS and cuDNN (csrc/emu/emu_cublas.cc, emu_cudnn.cc) for tests/test_emu.py:
 * results for NumPy to check (small integers, so every sum is exact) and the parameters
 * they must refuse. Each prints key=value lines; a status is printed as its number, with
 * key_message holding the library's text. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cudnn.h>

#include "launch.cuh"

static float *device_copy(const float *host, size_t n) {
    float *p = NULL;
    cudaMalloc(&p, n * sizeof(float));
    cudaMemcpy(p, host, n * sizeof(float), cudaMemcpyHostToDevice);
    return p;
}

static void print_device(const char *key, const float *p, size_t n) {
    float host[512];
    cudaMemcpy(host, p, n * sizeof(float), cudaMemcpyDeviceToHost);
    printf("%s=", key);
    for (size_t i = 0; i < n; i++)
        printf("%s%.9g", i ? "," : "", host[i]);
    printf("\n");
}

static void show_blas(const char *key, cublasStatus_t status) {
    printf("%s=%d\n%s_message=%s\n", key, (int)status, key, cublasGetStatusString(status));
}

static void show_dnn(const char *key, cudnnStatus_t status) {
    char detail[1024];
    cudnnGetLastErrorString(detail, sizeof detail);
    printf("%s=%d\n%s_message=%s\n", key, (int)status, key, detail);
}

/* sgemm: m=3, n=4, k=5, every leading dimension 7; A and B hold 49 floats, C 28. */
static void cublas_cases(void) {
    enum { M = 3, N = 4, K = 5, LD = 7 };
    float a[LD * LD], b[LD * LD], c[LD * N];
    for (int i = 0; i < LD * LD; i++) {
        a[i] = (float)(i * 7 % 11 - 5);
        b[i] = (float)(i * 5 % 13 - 6);
    }
    for (int i = 0; i < LD * N; i++)
        c[i] = (float)(i % 5 - 2);
    float *A = device_copy(a, LD * LD), *B = device_copy(b, LD * LD), *C = device_copy(c, LD * N);
    cublasHandle_t h;
    show_blas("create", cublasCreate(&h));
    const float alpha = 1.5f, beta = -0.5f, zero = 0.0f;
    const cublasOperation_t ops[2] = {CUBLAS_OP_N, CUBLAS_OP_T};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            char key[32];
            cudaMemcpy(C, c, sizeof c, cudaMemcpyHostToDevice);
            snprintf(key, sizeof key, "sgemm_%c%c", "NT"[ta], "NT"[tb]);
            show_blas(
                key, cublasSgemm(h, ops[ta], ops[tb], M, N, K, &alpha, A, LD, B, LD, &beta, C, LD));
            snprintf(key, sizeof key, "c_%c%c", "NT"[ta], "NT"[tb]);
            print_device(key, C, LD * N);
        }
    /* alpha 0: A and B are not read (here not even device memory); beta 0: C is not read */
    cudaMemcpy(C, c, sizeof c, cudaMemcpyHostToDevice);
    show_blas("alpha0",
              cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &zero, a, LD, b, LD, &beta, C, LD));
    print_device("c_alpha0", C, LD * N);
    cudaMemset(C, 0xFF, sizeof c); /* NaN */
    show_blas("beta0", cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &alpha, A, LD, B, LD,
                                   &zero, C, LD));
    print_device("c_beta0", C, LD * N);
    /* scalars in device memory */
    float scalars[2] = {alpha, beta}, *d_scalars = device_copy(scalars, 2);
    cudaMemcpy(C, c, sizeof c, cudaMemcpyHostToDevice);
    show_blas("pointer_mode_device", cublasSetPointerMode(h, CUBLAS_POINTER_MODE_DEVICE));
    show_blas("device_scalars", cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, d_scalars, A, LD,
                                            B, LD, d_scalars + 1, C, LD));
    print_device("c_device_scalars", C, LD * N);
    show_blas("device_mode_host_alpha", cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &alpha, A,
                                                    LD, B, LD, d_scalars + 1, C, LD));
    cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST);
    /* GemmEx: the NN product again from half and bf16 copies of A and B (small integers:
     * exact in both), into float C */
    __half a16[LD * LD], b16[LD * LD];
    __nv_bfloat16 a_bf[LD * LD], b_bf[LD * LD];
    for (int i = 0; i < LD * LD; i++) {
        a16[i] = __float2half(a[i]), b16[i] = __float2half(b[i]);
        a_bf[i] = __float2bfloat16(a[i]), b_bf[i] = __float2bfloat16(b[i]);
    }
    void *A16, *B16, *A_BF, *B_BF;
    cudaMalloc(&A16, sizeof a16), cudaMalloc(&B16, sizeof b16);
    cudaMalloc(&A_BF, sizeof a_bf), cudaMalloc(&B_BF, sizeof b_bf);
    cudaMemcpy(A16, a16, sizeof a16, cudaMemcpyHostToDevice);
    cudaMemcpy(B16, b16, sizeof b16, cudaMemcpyHostToDevice);
    cudaMemcpy(A_BF, a_bf, sizeof a_bf, cudaMemcpyHostToDevice);
    cudaMemcpy(B_BF, b_bf, sizeof b_bf, cudaMemcpyHostToDevice);
    cudaMemcpy(C, c, sizeof c, cudaMemcpyHostToDevice);
    show_blas("gemmex_half", cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &alpha, A16,
                                          CUDA_R_16F, LD, B16, CUDA_R_16F, LD, &beta, C,
                                          CUDA_R_32F, LD, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    print_device("c_gemmex_half", C, LD * N);
    cudaMemcpy(C, c, sizeof c, cudaMemcpyHostToDevice);
    show_blas("gemmex_bf16", cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &alpha, A_BF,
                                          CUDA_R_16BF, LD, B_BF, CUDA_R_16BF, LD, &beta, C,
                                          CUDA_R_32F, LD, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    print_device("c_gemmex_bf16", C, LD * N);
    show_blas("gemmex_mixed", cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &alpha, A16,
                                           CUDA_R_16F, LD, B, CUDA_R_32F, LD, &beta, C,
                                           CUDA_R_32F, LD, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    /* A spans 31 halves (62 bytes) of its 98: from element 18 it ends at the allocation's
     * last byte, from 19 one element (2 bytes) past it */
    show_blas("gemmex_fits", cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &alpha,
                                          (__half *)A16 + 18, CUDA_R_16F, LD, B16, CUDA_R_16F, LD,
                                          &beta, C, CUDA_R_32F, LD, CUBLAS_COMPUTE_32F,
                                          CUBLAS_GEMM_DEFAULT));
    show_blas("gemmex_short", cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &alpha,
                                           (__half *)A16 + 19, CUDA_R_16F, LD, B16, CUDA_R_16F, LD,
                                           &beta, C, CUDA_R_32F, LD, CUBLAS_COMPUTE_32F,
                                           CUBLAS_GEMM_DEFAULT));
    cudaFree(A16), cudaFree(B16), cudaFree(A_BF), cudaFree(B_BF);
    /* refusals */
    show_blas("lda_too_small",
              cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &alpha, A, 2, B, LD, &beta, C, LD));
    show_blas("bad_op", cublasSgemm(h, (cublasOperation_t)7, CUBLAS_OP_N, M, N, K, &alpha, A, LD, B,
                                    LD, &beta, C, LD));
    float *small_c = device_copy(c, M * N);
    show_blas("c_past_end", cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &alpha, A, LD, B, LD,
                                        &beta, small_c, LD));
    show_blas("host_b", cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &alpha, A, LD, b, LD,
                                    &beta, C, LD));
    show_blas("c_is_a", cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &alpha, A, LD, B, LD,
                                    &beta, A, LD));
    show_blas("math_tf32", cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH));
    show_blas("math_99", cublasSetMathMode(h, (cublasMath_t)99));
    show_blas("bad_stream", cublasSetStream(h, (cudaStream_t)0x1234));
    show_blas("destroy", cublasDestroy(h));
    show_blas("destroyed_handle", cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &alpha, A, LD,
                                              B, LD, &beta, C, LD));
    int major = 0;
    show_blas("property", cublasGetProperty(MAJOR_VERSION, &major));
    printf("major=%d\n", major);
    cudaFree(A), cudaFree(B), cudaFree(C), cudaFree(d_scalars), cudaFree(small_c);
}

/* x [2, 4, 5, 6], w [6, 2, 3, 3] in 2 groups, padding 1/2, stride 2/1, dilation 2/1:
 * y [2, 6, 2, 8]. */
static void cudnn_cases(void) {
    enum { NX = 2 * 4 * 5 * 6, NW = 6 * 2 * 3 * 3, NY = 2 * 6 * 2 * 8 };
    float x[NX], w[NW], dy[NY], ones[NX];
    for (int i = 0; i < NX; i++)
        x[i] = (float)(i * 7 % 9 - 4), ones[i] = 1.0f;
    for (int i = 0; i < NW; i++)
        w[i] = (float)(i * 5 % 7 - 3);
    for (int i = 0; i < NY; i++)
        dy[i] = (float)(i * 3 % 5 - 2);
    float *X = device_copy(x, NX), *W = device_copy(w, NW), *DY = device_copy(dy, NY);
    float *Y = device_copy(dy, NY), *DX = device_copy(ones, NX), *DW = device_copy(w, NW);
    cudnnHandle_t h;
    cudnnTensorDescriptor_t xd, yd, bad;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    show_dnn("create", cudnnCreate(&h));
    cudnnCreateTensorDescriptor(&xd), cudnnCreateTensorDescriptor(&yd),
        cudnnCreateTensorDescriptor(&bad);
    cudnnCreateFilterDescriptor(&wd), cudnnCreateConvolutionDescriptor(&cd);
    cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 2, 4, 5, 6);
    cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 6, 2, 3, 3);
    show_dnn("conv_desc", cudnnSetConvolution2dDescriptor(
                              cd, 1, 2, 2, 1, 2, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    show_dnn("groups", cudnnSetConvolutionGroupCount(cd, 2));
    show_dnn("math_fma", cudnnSetConvolutionMathType(cd, CUDNN_FMA_MATH));
    int n, c, oh, ow;
    show_dnn("output_dim", cudnnGetConvolution2dForwardOutputDim(cd, xd, wd, &n, &c, &oh, &ow));
    printf("y_shape=%d,%d,%d,%d\n", n, c, oh, ow);
    cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, c, oh, ow);
    /* what the heuristics offer: algo:status:determinism:math:workspace */
    cudnnConvolutionBwdFilterAlgoPerf_t perf[8];
    int returned = 0;
    show_dnn("filter_algos",
             cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, xd, yd, cd, wd, 8, &returned, perf));
    printf("filter_algo_list=");
    for (int i = 0; i < returned; i++)
        printf("%s%d:%d:%d:%d:%zu", i ? "," : "", (int)perf[i].algo, (int)perf[i].status,
               (int)perf[i].determinism, (int)perf[i].mathType, perf[i].memory);
    printf("\n");
    size_t ws_bytes = 0;
    show_dnn("filter_ws", cudnnGetConvolutionBackwardFilterWorkspaceSize(
                              h, xd, yd, cd, wd, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, &ws_bytes));
    void *ws = NULL;
    cudaMalloc(&ws, ws_bytes);
    /* y = x * w into a NaN-filled y (beta 0: not read); dx = 1 + dy * w (beta 1);
     * dw = 2 (x * dy) (alpha 2, beta 0) */
    const float one = 1.0f, two = 2.0f, zero = 0.0f;
    cudaMemset(Y, 0xFF, NY * sizeof(float));
    show_dnn("forward", cudnnConvolutionForward(h, &one, xd, X, wd, W, cd,
                                                CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, NULL, 0,
                                                &zero, yd, Y));
    print_device("y", Y, NY);
    show_dnn("backward_data", cudnnConvolutionBackwardData(h, &one, wd, W, yd, DY, cd,
                                                           CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, NULL,
                                                           0, &one, xd, DX));
    print_device("dx", DX, NX);
    show_dnn("backward_filter", cudnnConvolutionBackwardFilter(h, &two, xd, X, yd, DY, cd,
                                                               CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
                                                               ws, ws_bytes, &zero, wd, DW));
    print_device("dw", DW, NW);
    /* refusals */
    show_dnn("nhwc",
             cudnnSetTensor4dDescriptor(bad, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, 2, 4, 5, 6));
    show_dnn("double",
             cudnnSetTensor4dDescriptor(bad, CUDNN_TENSOR_NCHW, CUDNN_DATA_DOUBLE, 2, 4, 5, 6));
    show_dnn("zero_dim",
             cudnnSetTensor4dDescriptor(bad, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 2, 0, 5, 6));
    show_dnn("unset_desc", cudnnConvolutionForward(h, &one, bad, X, wd, W, cd,
                                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, NULL,
                                                   0, &zero, yd, Y));
    /* half data is accepted, but x, w and y must share one type */
    show_dnn("half_desc",
             cudnnSetTensor4dDescriptor(bad, CUDNN_TENSOR_NCHW, CUDNN_DATA_HALF, 2, 4, 5, 6));
    show_dnn("mixed_types", cudnnConvolutionForward(h, &one, bad, X, wd, W, cd,
                                                    CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, NULL,
                                                    0, &zero, yd, Y));
    cudnnSetTensor4dDescriptor(bad, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 2, 6, 2, 7);
    show_dnn("wrong_y", cudnnConvolutionForward(h, &one, xd, X, wd, W, cd,
                                                CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, NULL, 0,
                                                &zero, bad, Y));
    show_dnn("fft", cudnnConvolutionForward(h, &one, xd, X, wd, W, cd,
                                            CUDNN_CONVOLUTION_FWD_ALGO_FFT, NULL, 0, &zero, yd, Y));
    show_dnn("workspace_short", cudnnConvolutionBackwardFilter(h, &one, xd, X, yd, DY, cd,
                                                               CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
                                                               ws, ws_bytes - 1, &zero, wd, DW));
    char host_ws[1024];
    show_dnn("workspace_host", cudnnConvolutionBackwardFilter(h, &one, xd, X, yd, DY, cd,
                                                              CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
                                                              host_ws, ws_bytes, &zero, wd, DW));
    float *small_y = device_copy(dy, NY - 1);
    show_dnn("y_past_end", cudnnConvolutionForward(h, &one, xd, X, wd, W, cd,
                                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, NULL,
                                                   0, &zero, yd, small_y));
    show_dnn("y_is_x", cudnnConvolutionForward(h, &one, xd, X, wd, W, cd,
                                               CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, NULL, 0,
                                               &zero, yd, X));
    show_dnn("flipped", cudnnSetConvolution2dDescriptor(cd, 1, 2, 2, 1, 2, 1, CUDNN_CONVOLUTION,
                                                        CUDNN_DATA_FLOAT));
    show_dnn("groups_3", cudnnSetConvolutionGroupCount(cd, 3));
    show_dnn("groups_3_forward", cudnnConvolutionForward(h, &one, xd, X, wd, W, cd,
                                                         CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                                                         NULL, 0, &zero, yd, Y));
    show_dnn("after_error", CUDNN_STATUS_SUCCESS); /* the message was read: cleared */
    printf("version=%zu\n", cudnnGetVersion());
    cudnnDestroyTensorDescriptor(xd), cudnnDestroyTensorDescriptor(yd),
        cudnnDestroyTensorDescriptor(bad);
    cudnnDestroyFilterDescriptor(wd), cudnnDestroyConvolutionDescriptor(cd);
    show_dnn("destroy", cudnnDestroy(h));
    cudaFree(X), cudaFree(W), cudaFree(DY), cudaFree(Y), cudaFree(DX), cudaFree(DW), cudaFree(ws),
        cudaFree(small_y);
}

int run_library_case(const char *name) {
    if (!strcmp(name, "cublas"))
        cublas_cases();
    else if (!strcmp(name, "cudnn"))
        cudnn_cases();
    else
        return 0;
    return 1;
}
