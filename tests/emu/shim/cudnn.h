/* Test shim: the cuDNN names kernels/common.cuh declares with (see cublas_v2.h here). */
#ifndef CX_EMU_SHIM_CUDNN_H
#define CX_EMU_SHIM_CUDNN_H
typedef struct cx_emu_cudnn_context *cudnnHandle_t;
typedef enum { CUDNN_STATUS_SUCCESS = 0, CUDNN_STATUS_ALLOC_FAILED = 2 } cudnnStatus_t;
#endif
