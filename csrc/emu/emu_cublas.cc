/* The emulated cuBLAS: what kernels/ calls (handles and their settings, cublasSgemm,
 * cublasGemmEx), so that the CUDA backend's linear layers run on the CUDA emulator
 * (docs/emulator.md).
 *
 * Both products are the textbook triple loop (GemmEx reads its half or bf16 operands
 * exactly as the values they hold), accumulated in double and rounded to float
 * once per element, reading and writing the emulator's device memory directly (host code
 * between device_memory_open and device_memory_close). It is a reference, not a model of
 * cuBLAS's kernels: it says whether our calls ask for the right product, not what
 * rounding cuBLAS gives.
 *
 * Every parameter is checked as cuBLAS documents it (CUBLAS_STATUS_INVALID_VALUE), and
 * further than cuBLAS can: each matrix, with its leading dimension, must lie inside one
 * device allocation, and C must not overlap A or B (CUBLAS_STATUS_EXECUTION_FAILED or
 * INVALID_VALUE, with a message that cublasGetStatusString appends). A setting the
 * emulator does not know is refused, never ignored. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <set>

#include "emu_internal.h"
#include "include/cublas_v2.h"

struct cx_emu_cublas_context {
    cudaStream_t stream;
    cublasPointerMode_t pointer_mode;
    cublasMath_t math_mode;
    cublasAtomicsMode_t atomics_mode;
};

using cx_emu::big_lock;

namespace {

std::set<cublasHandle_t> handles;
cublasStatus_t message_status = CUBLAS_STATUS_SUCCESS; /* the status `message` explains */
char message[1024];
thread_local char described[1280];

/* Records what the emulator found, for cublasGetStatusString; returns status. */
cublasStatus_t refuse(cublasStatus_t status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
cublasStatus_t refuse(cublasStatus_t status, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    message_status = status;
    return status;
}

int handle_valid(cublasHandle_t handle) {
    return handle && handles.count(handle);
}

const char *op_name(cublasOperation_t op) {
    return op == CUBLAS_OP_N ? "N" : op == CUBLAS_OP_T ? "T" : "C";
}

/* Bytes spanned by a column-major rows x cols matrix with leading dimension ld (0 when
 * empty). */
size_t matrix_bytes(int rows, int cols, int ld, size_t element_bytes) {
    if (rows <= 0 || cols <= 0)
        return 0;
    return ((size_t)(cols - 1) * (size_t)ld + (size_t)rows) * element_bytes;
}

/* Element i of a matrix of `type` (CUDA_R_32F, 16F or 16BF) as a float (exact). */
float element(const void *m, cudaDataType type, size_t i) {
    if (type == CUDA_R_16F)
        return cx_emu::half_bits_to_float(((const uint16_t *)m)[i]);
    if (type == CUDA_R_16BF)
        return cx_emu::bfloat16_bits_to_float(((const uint16_t *)m)[i]);
    return ((const float *)m)[i];
}

/* A scalar argument: a host float, or a device float under CUBLAS_POINTER_MODE_DEVICE. */
cublasStatus_t read_scalar(const cublasHandle_t handle, const float *p, const char *name,
                           float *out) {
    if (handle->pointer_mode == CUBLAS_POINTER_MODE_HOST) {
        *out = *p;
        return CUBLAS_STATUS_SUCCESS;
    }
    char why[512];
    if (!cx_emu::device_range_ok(p, sizeof(float), name, why, sizeof why))
        return refuse(CUBLAS_STATUS_EXECUTION_FAILED,
                      "cublas gemm (CUBLAS_POINTER_MODE_DEVICE): %s", why);
    cx_emu::device_memory_open();
    *out = *p;
    cx_emu::device_memory_close();
    return CUBLAS_STATUS_SUCCESS;
}

} // namespace

cublasStatus_t cublasCreate(cublasHandle_t *handle) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (!handle)
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasCreate: NULL handle pointer");
    cublasHandle_t h = new cx_emu_cublas_context;
    h->stream = 0;
    h->pointer_mode = CUBLAS_POINTER_MODE_HOST;
    h->math_mode = CUBLAS_DEFAULT_MATH;
    h->atomics_mode = CUBLAS_ATOMICS_NOT_ALLOWED;
    handles.insert(h);
    *handle = h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (!handles.erase(handle))
        return refuse(CUBLAS_STATUS_NOT_INITIALIZED, "cublasDestroy: %p is not a live handle",
                      (void *)handle);
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (!handle_valid(handle))
        return refuse(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetStream: %p is not a live handle",
                      (void *)handle);
    if (!cx_emu::stream_valid(stream))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasSetStream: %p is not a live stream",
                      (void *)stream);
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (!handle_valid(handle))
        return refuse(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetMathMode: %p is not a live handle",
                      (void *)handle);
    /* one of the four modes, optionally with the reduced-precision flag. TF32 and tensor
     * ops are permissions, which the fp32/double reference loop may decline: it computes
     * as in CUBLAS_PEDANTIC_MATH whatever the mode (docs/emulator.md) */
    unsigned base = (unsigned)mode & ~(unsigned)CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    if (base > CUBLAS_TF32_TENSOR_OP_MATH)
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasSetMathMode: %d is not a cublasMath_t",
                      (int)mode);
    handle->math_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetAtomicsMode(cublasHandle_t handle, cublasAtomicsMode_t mode) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (!handle_valid(handle))
        return refuse(CUBLAS_STATUS_NOT_INITIALIZED,
                      "cublasSetAtomicsMode: %p is not a live handle", (void *)handle);
    if (mode != CUBLAS_ATOMICS_NOT_ALLOWED && mode != CUBLAS_ATOMICS_ALLOWED)
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasSetAtomicsMode: %d is not a mode",
                      (int)mode);
    handle->atomics_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetPointerMode(cublasHandle_t handle, cublasPointerMode_t mode) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (!handle_valid(handle))
        return refuse(CUBLAS_STATUS_NOT_INITIALIZED,
                      "cublasSetPointerMode: %p is not a live handle", (void *)handle);
    if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE)
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasSetPointerMode: %d is not a mode",
                      (int)mode);
    handle->pointer_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetProperty(libraryPropertyType type, int *value) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (!value)
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasGetProperty: NULL value");
    switch (type) {
    case MAJOR_VERSION: *value = CUBLAS_VER_MAJOR; break;
    case MINOR_VERSION: *value = CUBLAS_VER_MINOR; break;
    case PATCH_LEVEL: *value = CUBLAS_VER_PATCH; break;
    default:
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasGetProperty: %d is not a property",
                      (int)type);
    }
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusString(cublasStatus_t status) {
    static const struct {
        cublasStatus_t status;
        const char *text;
    } names[] = {
        {CUBLAS_STATUS_SUCCESS, "CUBLAS_STATUS_SUCCESS"},
        {CUBLAS_STATUS_NOT_INITIALIZED, "CUBLAS_STATUS_NOT_INITIALIZED"},
        {CUBLAS_STATUS_ALLOC_FAILED, "CUBLAS_STATUS_ALLOC_FAILED"},
        {CUBLAS_STATUS_INVALID_VALUE, "CUBLAS_STATUS_INVALID_VALUE"},
        {CUBLAS_STATUS_ARCH_MISMATCH, "CUBLAS_STATUS_ARCH_MISMATCH"},
        {CUBLAS_STATUS_MAPPING_ERROR, "CUBLAS_STATUS_MAPPING_ERROR"},
        {CUBLAS_STATUS_EXECUTION_FAILED, "CUBLAS_STATUS_EXECUTION_FAILED"},
        {CUBLAS_STATUS_INTERNAL_ERROR, "CUBLAS_STATUS_INTERNAL_ERROR"},
        {CUBLAS_STATUS_NOT_SUPPORTED, "CUBLAS_STATUS_NOT_SUPPORTED"},
        {CUBLAS_STATUS_LICENSE_ERROR, "CUBLAS_STATUS_LICENSE_ERROR"},
    };
    const char *text = "CUBLAS_STATUS_UNKNOWN";
    for (const auto &n : names)
        if (n.status == status)
            text = n.text;
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (status == CUBLAS_STATUS_SUCCESS || status != message_status)
        return text;
    snprintf(described, sizeof described, "%s: %s [CUDA emulator]", text, message);
    return described;
}

/* C (float) = alpha op(A) op(B) + beta C with A and B of `type`; `call` names the entry
 * point in messages. */
static cublasStatus_t gemm(const char *call, cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const float *alpha,
                           const void *A, int lda, const void *B, int ldb, cudaDataType type,
                           const float *beta, float *C, int ldc) {
    if (!handle_valid(handle))
        return refuse(CUBLAS_STATUS_NOT_INITIALIZED, "%s: %p is not a live handle",
                      call, (void *)handle);
    /* the argument checks cuBLAS documents (CUBLAS_OP_C is CUBLAS_OP_T for real data) */
    for (cublasOperation_t op : {transa, transb})
        if (op != CUBLAS_OP_N && op != CUBLAS_OP_T && op != CUBLAS_OP_C)
            return refuse(CUBLAS_STATUS_INVALID_VALUE, "%s: %d is not a cublasOperation_t",
                          call, (int)op);
    bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
    int a_rows = ta ? k : m, a_cols = ta ? m : k; /* A as stored */
    int b_rows = tb ? n : k, b_cols = tb ? k : n;
    if (m < 0 || n < 0 || k < 0 || lda < (a_rows > 1 ? a_rows : 1) ||
        ldb < (b_rows > 1 ? b_rows : 1) || ldc < (m > 1 ? m : 1))
        return refuse(
            CUBLAS_STATUS_INVALID_VALUE,
            "%s(%s, %s, m=%d, n=%d, k=%d, lda=%d, ldb=%d, ldc=%d): sizes must "
            "be >= 0 and each leading dimension at least the rows of its matrix as stored "
            "(%d, %d, %d)",
            call, op_name(transa), op_name(transb), m, n, k, lda, ldb, ldc, a_rows, b_rows, m);
    if (!alpha || !beta)
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "%s: alpha or beta is NULL", call);
    if (!cx_emu::stream_valid(handle->stream))
        return refuse(CUBLAS_STATUS_EXECUTION_FAILED,
                      "%s: the handle's stream %p is no longer live", call,
                      (void *)handle->stream);
    float a_scale, b_scale;
    cublasStatus_t status = read_scalar(handle, alpha, "alpha", &a_scale);
    if (status == CUBLAS_STATUS_SUCCESS)
        status = read_scalar(handle, beta, "beta", &b_scale);
    if (status != CUBLAS_STATUS_SUCCESS)
        return status;
    if (m == 0 || n == 0)
        return CUBLAS_STATUS_SUCCESS;
    /* BLAS: A and B are not read when alpha is 0 or k is 0; C is not read when beta is 0 */
    bool reads_ab = a_scale != 0.0f && k > 0;
    size_t ab_element = type == CUDA_R_32F ? sizeof(float) : sizeof(uint16_t);
    size_t a_bytes = reads_ab ? matrix_bytes(a_rows, a_cols, lda, ab_element) : 0;
    size_t b_bytes = reads_ab ? matrix_bytes(b_rows, b_cols, ldb, ab_element) : 0;
    size_t c_bytes = matrix_bytes(m, n, ldc, sizeof(float));
    char why[512];
    if ((reads_ab && !cx_emu::device_range_ok(A, a_bytes, "A", why, sizeof why)) ||
        (reads_ab && !cx_emu::device_range_ok(B, b_bytes, "B", why, sizeof why)) ||
        !cx_emu::device_range_ok(C, c_bytes, "C", why, sizeof why))
        return refuse(CUBLAS_STATUS_EXECUTION_FAILED,
                      "%s(%s, %s, m=%d, n=%d, k=%d, lda=%d, ldb=%d, ldc=%d): %s",
                      call, op_name(transa), op_name(transb), m, n, k, lda, ldb, ldc, why);
    if (cx_emu::ranges_overlap(C, c_bytes, A, a_bytes) ||
        cx_emu::ranges_overlap(C, c_bytes, B, b_bytes))
        return refuse(CUBLAS_STATUS_INVALID_VALUE,
                      "%s: C overlaps %s (cuBLAS's result would be undefined)",
                      call, cx_emu::ranges_overlap(C, c_bytes, A, a_bytes) ? "A" : "B");

    cx_emu::device_memory_open();
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double sum = 0.0;
            if (reads_ab)
                for (int p = 0; p < k; p++) {
                    float a = element(A, type, ta ? p + (size_t)i * lda : i + (size_t)p * lda);
                    float b = element(B, type, tb ? j + (size_t)p * ldb : p + (size_t)j * ldb);
                    sum += (double)a * (double)b;
                }
            float *c = &C[i + (size_t)j * ldc];
            double result = (double)a_scale * sum;
            if (b_scale != 0.0f)
                result += (double)b_scale * (double)*c;
            *c = (float)result;
        }
    cx_emu::device_memory_close();
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const float *alpha,
                           const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    return gemm("cublasSgemm", handle, transa, transb, m, n, k, alpha, A, lda, B, ldb,
                CUDA_R_32F, beta, C, ldc);
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void *alpha,
                            const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t algo) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    bool known = Atype == CUDA_R_32F || Atype == CUDA_R_16F || Atype == CUDA_R_16BF;
    if (!known || Btype != Atype || Ctype != CUDA_R_32F || computeType != CUBLAS_COMPUTE_32F)
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                      "cublasGemmEx: A type %d, B type %d, C type %d, compute type %d: the "
                      "emulator has A and B of one type (CUDA_R_32F, 16F or 16BF), C CUDA_R_32F "
                      "and CUBLAS_COMPUTE_32F only", (int)Atype, (int)Btype, (int)Ctype,
                      (int)computeType);
    if (algo != CUBLAS_GEMM_DEFAULT && algo != CUBLAS_GEMM_DEFAULT_TENSOR_OP)
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasGemmEx: algorithm %d is not one the "
                      "emulator knows", (int)algo);
    return gemm("cublasGemmEx", handle, transa, transb, m, n, k, (const float *)alpha, A, lda,
                B, ldb, Atype, (const float *)beta, (float *)C, ldc);
}
