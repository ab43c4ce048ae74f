/* Our own matrix product (device code; launched by kernels/linear.cu when the backend's
 * CODEXT_CUDA_GEMM=own, the fallback for cuBLAS that the emulator and GPU tests compare
 * with it). cuBLAS's convention and arguments, column-major:
 *   C [m x n] (leading dimension ldc) = op(A) op(B) + beta C
 *   op(A) [m x k]: A(i, l) = trans_a ? A[l + i lda] : A[i + l lda]
 *   op(B) [k x n]: B(l, j) = trans_b ? B[j + l ldb] : B[l + j ldb]
 * T: float, or the half / bf16 copies of mixed precision (each product exact in float,
 * summed in float: what cublasGemmEx's CUBLAS_COMPUTE_32F promises). One block computes
 * a GEMM_TILE x GEMM_TILE tile of C; both operands go through shared memory one k-tile
 * at a time; the sum runs over l in increasing order, so the result does not depend on
 * the launch. Simple, not fast: a reference that runs anywhere. */
#ifndef CX_KERNELS_DEVICE_GEMM_CUH
#define CX_KERNELS_DEVICE_GEMM_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "helpers.cuh"

#define GEMM_TILE 16

// nvrtc-check: instantiate gemm_tiled_kernel<float>
// nvrtc-check: instantiate gemm_tiled_kernel<__half>
// nvrtc-check: instantiate gemm_tiled_kernel<__nv_bfloat16>

static __device__ __forceinline__ float gemm_widen(float v) { return v; }
static __device__ __forceinline__ float gemm_widen(__half v) { return __half2float(v); }
static __device__ __forceinline__ float gemm_widen(__nv_bfloat16 v) { return __bfloat162float(v); }

/* grid (ceil(m / TILE), min(ceil(n / TILE), 65535)), block (TILE, TILE): thread (x, y)
 * owns C(i, j) with i = blockIdx.x TILE + x and j = tile_j TILE + y for the column tiles
 * tile_j = blockIdx.y, blockIdx.y + gridDim.y, ... (CUDA caps gridDim.y at 65535; n, a
 * linear layer's rows, can need more tiles). Every thread of a block runs the same loops,
 * so every barrier is reached by all. */
template <typename T>
__global__ void gemm_tiled_kernel(int trans_a, int trans_b, int m, int n, int k, const T *a,
                                  int lda, const T *b, int ldb, float beta, float *c, int ldc) {
    __shared__ float a_tile[GEMM_TILE][GEMM_TILE + 1]; /* [i][l] */
    __shared__ float b_tile[GEMM_TILE][GEMM_TILE + 1]; /* [l][j] */
    int x = (int)threadIdx.x, y = (int)threadIdx.y;
    int i = (int)blockIdx.x * GEMM_TILE + x;
    for (int tile_j = (int)blockIdx.y; tile_j * GEMM_TILE < n; tile_j += (int)gridDim.y) {
        int j = tile_j * GEMM_TILE + y;
        float sum = 0.0f;
        for (int l0 = 0; l0 < k; l0 += GEMM_TILE) {
            /* a_tile[x][y] = op(A)(i, l0 + y); b_tile[x][y] = op(B)(l0 + x, j) */
            int al = l0 + y, bl = l0 + x;
            float av = 0.0f, bv = 0.0f;
            if (i < m && al < k)
                av = gemm_widen(trans_a ? a[(size_t)al + (size_t)i * lda]
                                        : a[(size_t)i + (size_t)al * lda]);
            if (bl < k && j < n)
                bv = gemm_widen(trans_b ? b[(size_t)j + (size_t)bl * ldb]
                                        : b[(size_t)bl + (size_t)j * ldb]);
            a_tile[x][y] = av;
            b_tile[x][y] = bv;
            __syncthreads();
            int span = k - l0 < GEMM_TILE ? k - l0 : GEMM_TILE;
            for (int t = 0; t < span; t++)
                sum = __fmaf_rn(a_tile[x][t], b_tile[t][y], sum);
            __syncthreads();
        }
        if (i < m && j < n) {
            float *out = c + (size_t)i + (size_t)j * ldc;
            *out = beta == 0.0f ? sum : __fmaf_rn(beta, *out, sum);
        }
    }
}

#endif
