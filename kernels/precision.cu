/* Mixed precision on the CUDA backend (cx_precision, ops/cuda_abi.h): the conversions
 * that let linear.cu (cublasGemmEx) and conv.cu (cuDNN) run their products on half or
 * bf16 operands with float32 accumulation, while every buffer the ops exchange stays
 * float32. The half copies live in scratch slots CU_SLOT_LOW_A..C (grown to the largest
 * operand once, then reused). Host side; the kernels are in device/precision.cuh. */
#include "common.cuh"
#include "device/precision.cuh"

static size_t low_bytes(size_t n) { return n * 2; }

void *cu_low_buffer(cu_state *st, int slot, size_t n) {
    return cu_scratch(st, slot, cu_ceil_div(low_bytes(n), sizeof(float)));
}

const void *cu_lowered(cu_state *st, int slot, const float *src, size_t n) {
    void *dst = cu_low_buffer(st, slot, n);
    if (!dst || n == 0)
        return dst;
    if (st->precision == CX_PRECISION_BF16)
        CX_LAUNCH(lower_bf16_kernel, cu_blocks(n, CU_BLOCK), CU_BLOCK, 0, st->stream)(
            n, src, (__nv_bfloat16 *)dst);
    else
        CX_LAUNCH(lower_half_kernel, cu_blocks(n, CU_BLOCK), CU_BLOCK, 0, st->stream)(
            n, src, (__half *)dst);
    return cu_ok_launch(st, "mixed precision (operand to half)") ? dst : NULL;
}

void cu_widen(cu_state *st, const void *src, float *dst, size_t n, int accumulate) {
    if (n == 0)
        return;
    if (st->precision == CX_PRECISION_BF16)
        CX_LAUNCH(widen_bf16_kernel, cu_blocks(n, CU_BLOCK), CU_BLOCK, 0, st->stream)(
            n, (const __nv_bfloat16 *)src, dst, accumulate);
    else
        CX_LAUNCH(widen_half_kernel, cu_blocks(n, CU_BLOCK), CU_BLOCK, 0, st->stream)(
            n, (const __half *)src, dst, accumulate);
    cu_ok_launch(st, "mixed precision (result to float)");
}

cudaDataType cu_low_blas_type(const cu_state *st) {
    return st->precision == CX_PRECISION_BF16 ? CUDA_R_16BF : CUDA_R_16F;
}

cudnnDataType_t cu_low_dnn_type(const cu_state *st) {
    return st->precision == CX_PRECISION_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
}
