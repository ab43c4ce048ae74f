/* The CUDA emulator's cuBLAS (csrc/emu/emu_cublas.cc): the part of cublas_v2.h that
 * kernels/ uses, with cuBLAS's names and numbers: handles and their settings, the status
 * text, cublasSgemm and cublasGemmEx (float, half or bf16 operands into a float result),
 * computed by a plain reference loop on the emulator's device
 * memory. The enums have int as their underlying type (C++ only), so that an out-of-range
 * value reaches the emulator as a value it refuses, not as undefined behaviour. What it
 * refuses and what it does not model is in docs/emulator.md. */
#ifndef CX_EMU_CUBLAS_V2_SHIM_H
#define CX_EMU_CUBLAS_V2_SHIM_H

#include "../emu_cuda.h"
#include "library_types.h"

/* The cuBLAS version the emulator reports (it stands beside the runtime's CUDA 12.8). */
#define CUBLAS_VER_MAJOR 12
#define CUBLAS_VER_MINOR 8
#define CUBLAS_VER_PATCH 0
#define CUBLAS_VERSION (CUBLAS_VER_MAJOR * 10000 + CUBLAS_VER_MINOR * 100 + CUBLAS_VER_PATCH)

typedef struct cx_emu_cublas_context *cublasHandle_t;

typedef enum : int {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_ARCH_MISMATCH = 8,
    CUBLAS_STATUS_MAPPING_ERROR = 11,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_INTERNAL_ERROR = 14,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
    CUBLAS_STATUS_LICENSE_ERROR = 16
} cublasStatus_t;

typedef enum : int { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 } cublasOperation_t;
typedef enum : int {
    CUBLAS_POINTER_MODE_HOST = 0,
    CUBLAS_POINTER_MODE_DEVICE = 1
} cublasPointerMode_t;
typedef enum : int {
    CUBLAS_ATOMICS_NOT_ALLOWED = 0,
    CUBLAS_ATOMICS_ALLOWED = 1
} cublasAtomicsMode_t;
typedef enum : int {
    CUBLAS_DEFAULT_MATH = 0,
    CUBLAS_TENSOR_OP_MATH = 1,
    CUBLAS_PEDANTIC_MATH = 2,
    CUBLAS_TF32_TENSOR_OP_MATH = 3,
    CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION = 16
} cublasMath_t;
typedef enum : int { CUBLAS_COMPUTE_32F = 68 } cublasComputeType_t;
typedef enum : int { CUBLAS_GEMM_DEFAULT = -1, CUBLAS_GEMM_DEFAULT_TENSOR_OP = 99 } cublasGemmAlgo_t;

cublasStatus_t cublasCreate(cublasHandle_t *handle);
cublasStatus_t cublasDestroy(cublasHandle_t handle);
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream);
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode);
cublasStatus_t cublasSetAtomicsMode(cublasHandle_t handle, cublasAtomicsMode_t mode);
cublasStatus_t cublasSetPointerMode(cublasHandle_t handle, cublasPointerMode_t mode);
cublasStatus_t cublasGetProperty(libraryPropertyType type, int *value);
/* cuBLAS's text for `status`; for the status of the emulator's last finding, followed by
 * what it found. */
const char *cublasGetStatusString(cublasStatus_t status);
/* C = alpha op(A) op(B) + beta C, column-major: op(A) m x k, op(B) k x n, C m x n. */
cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const float *alpha,
                           const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc);
/* The same with typed A and B: Atype == Btype, one of CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF;
 * C CUDA_R_32F; computeType CUBLAS_COMPUTE_32F (alpha, beta float); anything else is
 * refused with CUBLAS_STATUS_NOT_SUPPORTED. */
cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void *alpha,
                            const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t algo);

#endif
