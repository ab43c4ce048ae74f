/* Test shim: the cuBLAS names kernels/common.cuh declares with, for compiling today's
 * the kernels/ sources (which mix host-only includes into device code) against the CUDA emulator.
 * No cuBLAS function exists here: a kernel file that calls one does not link. */
#ifndef CX_EMU_SHIM_CUBLAS_V2_H
#define CX_EMU_SHIM_CUBLAS_V2_H
typedef struct cx_emu_cublas_context *cublasHandle_t;
typedef enum { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_ALLOC_FAILED = 3 } cublasStatus_t;
#endif
