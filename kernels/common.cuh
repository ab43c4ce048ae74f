/* Shared by the CUDA backend's files: the backend state, error recording, device scratch
 * memory, launch helpers and the prototypes of each op family's functions. Host code
 * only: the kernels themselves are in device/<family>.cuh, which include nothing of this
 * (they must compile alone under NVRTC; docs/cuda-build.md).
 *
 * Errors: ops return nothing (ops.h). The first CUDA, cuBLAS or cuDNN error since the
 * last sync() is recorded in the state with its text and the op that hit it; sync()
 * reports it through the host's cx_fail (cx_cuda_config.fail) and clears it. Never call
 * cx_fail directly here: this library has no copy of _C's error state (the link uses
 * --no-undefined, so such a call fails to build).
 *
 * Determinism: every reduction in these kernels has a fixed order that depends only on
 * the problem size (no atomics), so results are bit-identical from run to run on a
 * given GPU. cuBLAS is run with atomics disallowed and cuDNN's algorithms are chosen
 * among the deterministic ones when the backend is created with deterministic = 1.
 *
 * Built with -DCX_EMU against the CUDA emulator (docs/emulator.md), <cuda_runtime.h>,
 * <cublas_v2.h> and <cudnn.h> are csrc/emu/include's and CX_LAUNCH runs kernels on
 * emulated threads: the same sources then make the emulated libcodext_cuda.so. */
#ifndef CX_KERNELS_COMMON_CUH
#define CX_KERNELS_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <stddef.h>

#include "launch.cuh" /* CX_LAUNCH: a triple-chevron launch under nvcc, the emulator under -DCX_EMU */
#include "ops/cuda_abi.h"
#include "ops/ops.h"

/* Scratch slots 0-3 are the ops' own; 4-6 hold the half (bf16) operands and results of
 * the mixed-precision products (precision.cu). */
#define CU_SCRATCH_SLOTS 7
#define CU_SLOT_LOW_A 4
#define CU_SLOT_LOW_B 5
#define CU_SLOT_LOW_C 6
/* Largest cuDNN workspace an algorithm may ask for. */
#define CU_CONV_WORKSPACE_LIMIT ((size_t)512 << 20)

/* One convolution as cuDNN runs it (conv.cu): the shape, direction and data precision,
 * its descriptors (made once) and the algorithm chosen for it (once). */
struct cu_conv_choice {
    cx_conv_shape shape;
    int direction; /* 0 forward, 1 backward data, 2 backward filter */
    int precision; /* cx_precision of the data (float, half or bf16 tensors) */
    int algo;
    int math_type; /* cudnnMathType_t it runs with (set on its descriptor) */
    int direct;    /* 1: no cuDNN algorithm passed the filters: the direct kernels run it */
    size_t workspace_bytes;
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
};

struct cu_state {
    int device;
    int deterministic;
    int allow_tf32;
    int precision;           /* cx_precision (cuda_abi.h); CX_PRECISION_FP32 at creation */
    /* our own kernels instead of the vendor's, chosen at creation from the environment:
     * CODEXT_CUDA_GEMM=own (device/gemm.cuh for cuBLAS), CODEXT_CUDA_CONV=own (the direct
     * kernels of device/direct_conv.cuh for every cuDNN convolution); for tests that
     * compare them, and a way round a vendor library's bug */
    int own_gemm, own_conv;
    int cc_major, cc_minor;  /* the device's compute capability */
    cx_fail_fn fail;
    cudaStream_t stream;
    cublasHandle_t cublas;
    cudnnHandle_t cudnn;
    /* first error since the last sync */
    cx_status error_code;
    char error[1024];
    /* device scratch: grows to the largest request, kept between calls */
    float *scratch[CU_SCRATCH_SLOTS];
    size_t scratch_floats[CU_SCRATCH_SLOTS];
    void *workspace; /* cuDNN workspace */
    size_t workspace_bytes;
    /* every convolution met so far, with its descriptors and algorithm (conv.cu): grows
     * when a new shape appears (the first steps), never evicts */
    cu_conv_choice *conv_plans;
    int n_conv_plans, conv_plans_capacity;
    unsigned char supported[CX_OP_COUNT]; /* supports(): a cu_<op> is defined */
    cudaEvent_t marks[CX_CUDA_MARKS];     /* stream_mark's events (NULL until first used) */
    cudaStream_t copy_stream;             /* the data path's (copy_stream_setup), or NULL */
    cudaEvent_t copy_done[CX_CUDA_COPY_SLOTS]; /* behind each slot's last upload */
    cudaEvent_t copy_free[CX_CUDA_COPY_SLOTS]; /* copy_release's, on the model's stream */
};

static inline cu_state *cu_get(cx_backend *be) { return (cu_state *)be->impl; }

/* ---- errors (backend_cuda.cu) ---- */
void cu_record(cu_state *st, cx_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Each returns 1 when `status` is a success, else records the error (naming `what`) and
 * returns 0. */
int cu_ok_cuda(cu_state *st, cudaError_t status, const char *what);
int cu_ok_cublas(cu_state *st, cublasStatus_t status, const char *what);
int cu_ok_cudnn(cu_state *st, cudnnStatus_t status, const char *what);
/* After a kernel launch: records a launch error (bad configuration, no kernel image for
 * this GPU). */
static inline int cu_ok_launch(cu_state *st, const char *what) {
    return cu_ok_cuda(st, cudaGetLastError(), what);
}

/* ---- device scratch (backend_cuda.cu) ----
 * cu_scratch: `slot` 0..CU_SCRATCH_SLOTS-1, at least n_floats floats; cu_workspace: bytes
 * for cuDNN. Both return NULL with the error recorded when cudaMalloc fails. Growing a
 * buffer waits for the queued work that may still use the old one. */
float *cu_scratch(cu_state *st, int slot, size_t n_floats);
void *cu_workspace(cu_state *st, size_t bytes);

/* ---- mixed precision (precision.cu) ----
 * cu_low_precision: 1 when products run on half (bf16) operands.
 * cu_lowered: src [n] float32 rounded to the backend's half type (round to nearest even)
 *   in scratch `slot` (CU_SLOT_LOW_*); NULL with the error recorded.
 * cu_low_buffer: room for n half (bf16) values in scratch `slot`.
 * cu_widen: dst [n] float32 = (accumulate ? dst : 0) + src [n] half (bf16), exact.
 * cu_low_blas_type / cu_low_dnn_type: the half type as cuBLAS's cudaDataType and cuDNN's
 *   cudnnDataType_t. */
static inline int cu_low_precision(const cu_state *st) {
    return st->precision != CX_PRECISION_FP32;
}
const void *cu_lowered(cu_state *st, int slot, const float *src, size_t n);
void *cu_low_buffer(cu_state *st, int slot, size_t n);
void cu_widen(cu_state *st, const void *src, float *dst, size_t n, int accumulate);
cudaDataType cu_low_blas_type(const cu_state *st);
cudnnDataType_t cu_low_dnn_type(const cu_state *st);

/* ---- products (linear.cu) ----
 * cu_gemm: C [ldc x n] = op(A) op(B) + beta C, column-major (cuBLAS's sgemm arguments);
 * a_count, b_count: the elements of A and B as stored (for their half copies). With
 * allow_low and mixed precision both operands are rounded to half first (float sums);
 * cuBLAS, or our GEMM under CODEXT_CUDA_GEMM=own. 1 on success, 0 with the error
 * recorded. */
int cu_gemm(cu_state *st, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
            const float *A, int lda, size_t a_count, const float *B, int ldb, size_t b_count,
            float beta, float *C, int ldc, int allow_low, const char *what);

/* ---- launch helpers ---- */
#define CU_BLOCK 256
/* Blocks for a grid-stride loop over n items (at most 2^20 blocks: the loop covers the
 * rest). Never 0: callers return early when n == 0. */
static inline unsigned cu_blocks(size_t n, int block) {
    size_t blocks = (n + (size_t)block - 1) / (size_t)block;
    if (blocks > ((size_t)1 << 20))
        blocks = (size_t)1 << 20;
    return blocks ? (unsigned)blocks : 1u;
}
static inline size_t cu_ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

/* ---- fixed-order reductions (reduce.cu) ----
 * With saved = NULL they sum dy only; with saved they also sum dy * xhat where
 * xhat = (x - mean) * rstd and mean, rstd come from a layernorm `saved` buffer.
 * Every output accumulates (+=) and may be NULL.
 * cu_column_sums: dy, x [rows, cols]; saved [2, rows]; sums [cols] over rows.
 * cu_channel_sums: dy, x [batch, channels, hw]; saved [2, batch*hw]; sums [channels]
 *   over batch and hw. */
void cu_column_sums(cu_state *st, int rows, int cols, const float *dy, const float *x,
                    const float *saved, float *sum_dy, float *sum_dy_xhat);
void cu_channel_sums(cu_state *st, int batch, int channels, int hw, const float *dy,
                     const float *x, const float *saved, float *sum_dy, float *sum_dy_xhat);

/* ---- convolution plans (conv.cu): destroys every plan's descriptors ---- */
void cu_conv_plans_free(cu_state *st);

/* ---- NCCL (nccl.cu): fills the nccl_* entries of the library's table ---- */
void cu_nccl_fill_api(cx_cuda_api *api);

/* ---- the ops ----
 * cu_<op> for every op of the table (ops/op_list.h, where shapes are documented), in
 * the file of its family (pointwise.cu, norm.cu, linear.cu, conv.cu, ...). The
 * declarations are weak: an op no .cu file defines is NULL here, and fill_table
 * (backend_cuda.cu) then installs a stub that records "not implemented" and makes
 * supports() answer 0. Implementing an op is defining its cu_<op>; C linkage makes a
 * definition whose parameters differ from the table a compile error. */
extern "C" {
#define CX_OP(name, params) __attribute__((weak, visibility("hidden"))) void cu_##name params;
#include "ops/op_list.h"
#undef CX_OP
}

#endif
