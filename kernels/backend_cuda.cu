/* The CUDA backend: state, errors, memory, sync, and the one exported entry point
 * cx_cuda_get_api() that the loader (csrc/ops/cuda_loader.c) resolves with dlsym.
 *
 * Every op of the table is callable: an op that no .cu file implements (its weak cu_<op>
 * is NULL, see common.cuh) gets a stub that records "not implemented" for sync() to
 * report, and supports() answers 0 for it. */
#include "common.cuh"
#include "device/probe.cuh"
#include "ops/cuda_optim.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CU_EXPORT extern "C" __attribute__((visibility("default")))

#define CU_STR2(...) #__VA_ARGS__
#define CU_STR(...) CU_STR2(__VA_ARGS__)
#ifndef __CUDA_ARCH_LIST__
#define __CUDA_ARCH_LIST__ unknown
#endif

/* ---- errors ---- */

void cu_record(cu_state *st, cx_status code, const char *fmt, ...) {
    if (st->error_code != CX_OK)
        return; /* keep the first */
    va_list args;
    va_start(args, fmt);
    vsnprintf(st->error, sizeof st->error, fmt, args);
    va_end(args);
    st->error_code = code;
}

int cu_ok_cuda(cu_state *st, cudaError_t status, const char *what) {
    if (status == cudaSuccess)
        return 1;
    cu_record(st, status == cudaErrorMemoryAllocation ? CX_ENOMEM : CX_ERUNTIME,
              "CUDA error in %s on device %d: %s (%s)", what, st->device,
              cudaGetErrorString(status), cudaGetErrorName(status));
    return 0;
}

int cu_ok_cublas(cu_state *st, cublasStatus_t status, const char *what) {
    if (status == CUBLAS_STATUS_SUCCESS)
        return 1;
    cu_record(st, status == CUBLAS_STATUS_ALLOC_FAILED ? CX_ENOMEM : CX_ERUNTIME,
              "cuBLAS error in %s on device %d: %s", what, st->device,
              cublasGetStatusString(status));
    return 0;
}

int cu_ok_cudnn(cu_state *st, cudnnStatus_t status, const char *what) {
    if (status == CUDNN_STATUS_SUCCESS)
        return 1;
    char detail[512] = "";
    cudnnGetLastErrorString(detail, sizeof detail);
    cu_record(st, status == CUDNN_STATUS_ALLOC_FAILED ? CX_ENOMEM : CX_ERUNTIME,
              "cuDNN error in %s on device %d: %s%s%s", what, st->device,
              cudnnGetErrorString(status), detail[0] ? ": " : "", detail);
    return 0;
}

/* ---- device scratch ---- */

float *cu_scratch(cu_state *st, int slot, size_t n_floats) {
    if (slot < 0 || slot >= CU_SCRATCH_SLOTS) {
        cu_record(st, CX_ERUNTIME, "internal: scratch slot %d out of range", slot);
        return NULL;
    }
    if (n_floats > st->scratch_floats[slot]) {
        size_t grown = st->scratch_floats[slot] + st->scratch_floats[slot] / 2;
        size_t want = n_floats > grown ? n_floats : grown;
        if (st->scratch[slot]) {
            /* queued kernels may still read the old buffer */
            if (!cu_ok_cuda(st, cudaStreamSynchronize(st->stream), "scratch growth"))
                return NULL;
            cudaFree(st->scratch[slot]);
            st->scratch[slot] = NULL;
            st->scratch_floats[slot] = 0;
        }
        void *fresh = NULL;
        if (!cu_ok_cuda(st, cudaMalloc(&fresh, want * sizeof(float)), "scratch allocation"))
            return NULL;
        st->scratch[slot] = (float *)fresh;
        st->scratch_floats[slot] = want;
    }
    return st->scratch[slot];
}

void *cu_workspace(cu_state *st, size_t bytes) {
    if (bytes == 0)
        return st->workspace; /* may be NULL: cuDNN accepts that for 0 bytes */
    if (bytes > st->workspace_bytes) {
        if (st->workspace) {
            if (!cu_ok_cuda(st, cudaStreamSynchronize(st->stream), "workspace growth"))
                return NULL;
            cudaFree(st->workspace);
            st->workspace = NULL;
            st->workspace_bytes = 0;
        }
        void *fresh = NULL;
        if (!cu_ok_cuda(st, cudaMalloc(&fresh, bytes), "cuDNN workspace allocation"))
            return NULL;
        st->workspace = fresh;
        st->workspace_bytes = bytes;
    }
    return st->workspace;
}

/* ---- memory ---- */

/* A failed allocation is reported to the caller at once (NULL plus the host's error
 * message), not recorded for sync(): the caller may recover (smaller micro-batch). */
static void *cu_alloc(cx_backend *be, size_t bytes) {
    cu_state *st = cu_get(be);
    void *ptr = NULL;
    cudaError_t status = cudaMalloc(&ptr, bytes ? bytes : 1);
    if (status != cudaSuccess) {
        cudaGetLastError(); /* an out-of-memory error is not sticky: clear it */
        size_t free_bytes = 0, total_bytes = 0;
        cudaMemGetInfo(&free_bytes, &total_bytes);
        st->fail(status == cudaErrorMemoryAllocation ? CX_ENOMEM : CX_ERUNTIME,
                 "cudaMalloc of %zu bytes on device %d failed: %s (%zu of %zu MiB free)", bytes,
                 st->device, cudaGetErrorString(status), free_bytes >> 20, total_bytes >> 20);
        return NULL;
    }
    return ptr;
}

static void cu_free(cx_backend *be, void *ptr) {
    cu_state *st = cu_get(be);
    if (!ptr)
        return;
    /* queued work may still use the buffer */
    cu_ok_cuda(st, cudaStreamSynchronize(st->stream), "free (waiting for queued work)");
    cu_ok_cuda(st, cudaFree(ptr), "cudaFree");
}

static void cu_zero(cx_backend *be, float *ptr, size_t n) {
    cu_state *st = cu_get(be);
    if (n)
        cu_ok_cuda(st, cudaMemsetAsync(ptr, 0, n * sizeof(float), st->stream), "zero");
}

static void cu_copy(cx_backend *be, float *dst, const float *src, size_t n) {
    cu_state *st = cu_get(be);
    if (n)
        cu_ok_cuda(st, cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice,
                                       st->stream), "copy");
}

/* With pageable host memory the copy has read `host` when this returns; with pinned
 * memory it is asynchronous: keep `host` unchanged until the next sync(). */
static void cu_upload(cx_backend *be, float *dst, const float *host, size_t n) {
    cu_state *st = cu_get(be);
    if (n)
        cu_ok_cuda(st, cudaMemcpyAsync(dst, host, n * sizeof(float), cudaMemcpyHostToDevice,
                                       st->stream), "upload");
}

/* `host` holds the data after the next sync(). */
static void cu_download(cx_backend *be, float *host, const float *src, size_t n) {
    cu_state *st = cu_get(be);
    if (n)
        cu_ok_cuda(st, cudaMemcpyAsync(host, src, n * sizeof(float), cudaMemcpyDeviceToHost,
                                       st->stream), "download");
}

/* Reports (through fail) and clears the first error recorded since the last report. */
static cx_status cu_report(cu_state *st) {
    if (st->error_code == CX_OK)
        return CX_OK;
    cx_status code = st->error_code;
    st->fail(code, "%s", st->error);
    st->error_code = CX_OK;
    st->error[0] = '\0';
    return code;
}

/* Waits for the stream, then reports as above. A sticky device error (illegal address,
 * ...) breaks the context: every later sync reports it again and the backend must be
 * destroyed. */
static cx_status cu_sync(cx_backend *be) {
    cu_state *st = cu_get(be);
    cu_ok_cuda(st, cudaStreamSynchronize(st->stream), "queued work (sync)");
    return cu_report(st);
}

/* The first error recorded since the last sync, kept for it; no wait. */
static cx_status cu_pending(cx_backend *be) { return cu_get(be)->error_code; }

/* ---- the table ---- */

/* Stubs for the ops this library does not implement. */
#define CX_OP(name, params)                                                               \
    static void cu_missing_##name params {                                                \
        cu_record(cu_get(be), CX_ERUNTIME, "the CUDA backend does not implement %s (ask " \
                  "supports() first)", #name);                                            \
    }
#include "ops/op_list.h"
#undef CX_OP

static int cu_supports(const cx_backend *be, cx_op_id op) {
    return op >= 0 && op < CX_OP_COUNT && ((const cu_state *)be->impl)->supported[op];
}

static void fill_table(cx_backend *be) {
    cu_state *st = cu_get(be);
    be->name = "cuda";
    be->alloc = cu_alloc;
    be->free = cu_free;
    be->zero = cu_zero;
    be->copy = cu_copy;
    be->upload = cu_upload;
    be->download = cu_download;
    be->sync = cu_sync;
    be->pending = cu_pending;
    be->supports = cu_supports;
#define CX_OP(name, params)                                    \
    be->name = cu_##name ? cu_##name : cu_missing_##name;     \
    st->supported[CX_OP_##name] = cu_##name != NULL;
#include "ops/op_list.h"
#undef CX_OP
}

static void destroy(cx_backend *be) {
    if (!be)
        return;
    cu_state *st = cu_get(be);
    if (st) {
        if (st->stream)
            cudaStreamSynchronize(st->stream);
        for (int i = 0; i < CU_SCRATCH_SLOTS; i++)
            if (st->scratch[i])
                cudaFree(st->scratch[i]);
        for (int i = 0; i < CX_CUDA_MARKS; i++)
            if (st->marks[i])
                cudaEventDestroy(st->marks[i]);
        if (st->copy_stream)
            cudaStreamSynchronize(st->copy_stream);
        for (int i = 0; i < CX_CUDA_COPY_SLOTS; i++) {
            if (st->copy_done[i])
                cudaEventDestroy(st->copy_done[i]);
            if (st->copy_free[i])
                cudaEventDestroy(st->copy_free[i]);
        }
        if (st->copy_stream)
            cudaStreamDestroy(st->copy_stream);
        if (st->workspace)
            cudaFree(st->workspace);
        cu_conv_plans_free(st);
        if (st->cudnn)
            cudnnDestroy(st->cudnn);
        if (st->cublas)
            cublasDestroy(st->cublas);
        if (st->stream)
            cudaStreamDestroy(st->stream);
        free(st);
    }
    free(be);
}

static cx_status device_count(cx_fail_fn fail, int *count) {
    *count = 0;
    cudaError_t status = cudaGetDeviceCount(count);
    if (status != cudaSuccess) {
        int driver = 0, runtime = 0;
        cudaDriverGetVersion(&driver); /* 0 when no driver is installed */
        cudaRuntimeGetVersion(&runtime);
        cudaGetLastError();
        *count = 0;
        if (driver == 0)
            return fail(CX_ERUNTIME, "cudaGetDeviceCount failed: %s (%s); no NVIDIA driver "
                        "was found (libcuda.so.1)", cudaGetErrorString(status),
                        cudaGetErrorName(status));
        if (status == cudaErrorInsufficientDriver)
            return fail(CX_ERUNTIME, "cudaGetDeviceCount failed: %s (%s); the driver supports "
                        "CUDA %d.%d, codext was built with CUDA runtime %d.%d: update the "
                        "driver or build codext with an older toolkit",
                        cudaGetErrorString(status), cudaGetErrorName(status), driver / 1000,
                        driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10);
        const char *visible = getenv("CUDA_VISIBLE_DEVICES");
        return fail(CX_ERUNTIME, "cudaGetDeviceCount failed: %s (%s); CUDA_VISIBLE_DEVICES=%s",
                    cudaGetErrorString(status), cudaGetErrorName(status),
                    visible ? visible : "(unset)");
    }
    return CX_OK;
}

static cx_status runtime_info(cx_fail_fn fail, int device, char *text, size_t size) {
    int driver = 0, runtime = 0, major = 0, minor = 0, sms = 0, cublas_version = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    cublasGetProperty(MAJOR_VERSION, &major);
    cublasGetProperty(MINOR_VERSION, &minor);
    cublas_version = major * 100 + minor;
    cudaDeviceProp prop;
    cudaError_t status = cudaGetDeviceProperties(&prop, device);
    if (status != cudaSuccess) {
        cudaGetLastError();
        return fail(CX_ERUNTIME, "cudaGetDeviceProperties(%d) failed: %s", device,
                    cudaGetErrorString(status));
    }
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    size_t cudnn = cudnnGetVersion();
    snprintf(text, size,
             "device %d: %s (sm_%d%d, %d SMs, %.1f GiB); driver CUDA %d.%d, runtime %d.%d, "
             "cuBLAS %d.%d, cuDNN %zu.%zu.%zu",
             device, prop.name, prop.major, prop.minor, sms,
             (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), driver / 1000,
             driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10, cublas_version / 100,
             cublas_version % 100, cudnn / 10000, cudnn % 10000 / 100, cudnn % 100);
    return CX_OK;
}

static cx_status backend_create(const cx_cuda_config *config, cx_backend **out) {
    cx_fail_fn fail = config->fail;
    *out = NULL;
    int count = 0;
    CX_TRY(device_count(fail, &count));
    if (config->device < 0 || config->device >= count)
        return fail(CX_EINVAL, "CUDA device %d does not exist (%d visible)", config->device,
                    count);
    size_t cudnn_major = cudnnGetVersion() / 10000;
    if (cudnn_major != CUDNN_MAJOR)
        return fail(CX_ERUNTIME, "cuDNN %zu is loaded but codext was built against cuDNN %d",
                    cudnn_major, CUDNN_MAJOR);
    cx_backend *be = (cx_backend *)calloc(1, sizeof *be);
    cu_state *st = (cu_state *)calloc(1, sizeof *st);
    if (!be || !st) {
        free(be);
        free(st);
        return fail(CX_ENOMEM, "out of host memory creating the CUDA backend");
    }
    be->impl = st;
    st->device = config->device;
    st->deterministic = config->deterministic;
    st->allow_tf32 = config->allow_tf32;
    st->precision = CX_PRECISION_FP32;
    st->fail = fail;
    const char *choices[2] = {"CODEXT_CUDA_GEMM", "CODEXT_CUDA_CONV"};
    int *own[2] = {&st->own_gemm, &st->own_conv};
    for (int i = 0; i < 2; i++) {
        const char *value = getenv(choices[i]);
        if (!value || !*value || !strcmp(value, "vendor"))
            continue;
        if (strcmp(value, "own") != 0) {
            free(be);
            free(st);
            return fail(CX_EINVAL, "%s must be 'own' (our kernels) or 'vendor' (cuBLAS / cuDNN), "
                        "got '%s'", choices[i], value);
        }
        *own[i] = 1;
    }
    fill_table(be);
    const char *step = "cudaSetDevice";
    cudaError_t cuda_status = cudaSetDevice(config->device);
    if (cuda_status == cudaSuccess) {
        step = "cudaDeviceGetAttribute (compute capability)";
        cuda_status = cudaDeviceGetAttribute(&st->cc_major, cudaDevAttrComputeCapabilityMajor,
                                             config->device);
    }
    if (cuda_status == cudaSuccess)
        cuda_status = cudaDeviceGetAttribute(&st->cc_minor, cudaDevAttrComputeCapabilityMinor,
                                             config->device);
    if (cuda_status == cudaSuccess) {
        step = "cudaStreamCreate";
        cuda_status = cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking);
    }
    if (cuda_status != cudaSuccess) {
        cudaGetLastError();
        destroy(be);
        return fail(CX_ERUNTIME, "%s on device %d failed: %s (%s)", step, config->device,
                    cudaGetErrorString(cuda_status), cudaGetErrorName(cuda_status));
    }
    /* a kernel image for this GPU: launched once, it fails at once where there is none */
    CX_LAUNCH(probe_kernel, 1, 32, 0, st->stream)(0, NULL);
    cuda_status = cudaGetLastError();
    if (cuda_status == cudaSuccess)
        cuda_status = cudaStreamSynchronize(st->stream);
    if (cuda_status != cudaSuccess) {
        cudaGetLastError();
        int major = st->cc_major, minor = st->cc_minor;
        destroy(be); /* frees st */
        return fail(CX_ERUNTIME, "device %d (sm_%d%d) cannot run this build's kernels, built for "
                    "%s: %s (%s); rebuild codext on this machine (pip install from source, or "
                    "set CODEXT_CUDA_ARCHS=%d%d)", config->device, major, minor,
                    CU_STR(__CUDA_ARCH_LIST__), cudaGetErrorString(cuda_status),
                    cudaGetErrorName(cuda_status), major, minor);
    }
    cublasStatus_t blas = cublasCreate(&st->cublas);
    if (blas == CUBLAS_STATUS_SUCCESS)
        blas = cublasSetStream(st->cublas, st->stream);
    /* DEFAULT math keeps SGEMM in full fp32; TF32 tensor cores only when allowed. */
    if (blas == CUBLAS_STATUS_SUCCESS)
        blas = cublasSetMathMode(st->cublas, config->allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                : CUBLAS_DEFAULT_MATH);
    if (blas == CUBLAS_STATUS_SUCCESS)
        blas = cublasSetAtomicsMode(st->cublas, CUBLAS_ATOMICS_NOT_ALLOWED);
    if (blas == CUBLAS_STATUS_SUCCESS)
        blas = cublasSetPointerMode(st->cublas, CUBLAS_POINTER_MODE_HOST);
    if (blas != CUBLAS_STATUS_SUCCESS) {
        destroy(be);
        return fail(CX_ERUNTIME, "cuBLAS initialisation on device %d failed: %s",
                    config->device, cublasGetStatusString(blas));
    }
    cudnnStatus_t dnn = cudnnCreate(&st->cudnn);
    if (dnn == CUDNN_STATUS_SUCCESS)
        dnn = cudnnSetStream(st->cudnn, st->stream);
    if (dnn != CUDNN_STATUS_SUCCESS) {
        char detail[512] = "";
        cudnnGetLastErrorString(detail, sizeof detail);
        destroy(be);
        return fail(CX_ERUNTIME, "cuDNN initialisation on device %d failed: %s %s",
                    config->device, cudnnGetErrorString(dnn), detail);
    }
    *out = be;
    return CX_OK;
}

/* ---- the device optimizer (ops/cuda_optim.h, kernels/optim.cu) on a backend's stream ---- */

static size_t optim_workspace_bytes(int count, size_t total) {
    return cu_optim_workspace_bytes(count, total);
}

static cx_status optim_step(cx_backend *be, const cu_optim_buffers *buffers,
                            const unsigned char *mask, const cu_optim_config *config) {
    cu_state *st = cu_get(be);
    int status = cu_optim_step(buffers, mask, config, st->stream);
    if (status == (int)cudaErrorInvalidValue)
        return st->fail(CX_EINVAL, "device optimizer step: invalid buffers or configuration");
    cu_ok_cuda(st, (cudaError_t)status, "device optimizer step");
    return CX_OK;
}

static cx_status optim_reset(cx_backend *be, const cu_optim_buffers *buffers) {
    cu_state *st = cu_get(be);
    int status = cu_optim_reset(buffers, st->stream);
    if (status == (int)cudaErrorInvalidValue)
        return st->fail(CX_EINVAL, "device optimizer reset: invalid buffers");
    cu_ok_cuda(st, (cudaError_t)status, "device optimizer reset");
    return CX_OK;
}

static cx_status optim_read_result(cx_backend *be, const cu_optim_buffers *buffers,
                                   cu_optim_result *out) {
    cu_state *st = cu_get(be);
    int status = cu_optim_read_result(buffers, out, st->stream);
    if (status == (int)cudaErrorInvalidValue)
        return st->fail(CX_EINVAL, "device optimizer result: invalid buffers");
    cu_ok_cuda(st, (cudaError_t)status, "device optimizer result (read-back)");
    return cu_report(st); /* the stream is idle (waited for above): what the queue recorded */
}

static void copy_bytes(cx_backend *be, void *dst, const void *src, size_t bytes, int to_device) {
    cu_state *st = cu_get(be);
    if (bytes)
        cu_ok_cuda(st, cudaMemcpyAsync(dst, src, bytes, to_device ? cudaMemcpyHostToDevice
                                                                  : cudaMemcpyDeviceToHost,
                                       st->stream), to_device ? "upload" : "download");
}

/* ---- mixed precision (precision.cu) ---- */

static cx_status backend_set_precision(cx_backend *be, int precision) {
    cu_state *st = cu_get(be);
    if (precision < CX_PRECISION_FP32 || precision > CX_PRECISION_BF16)
        return st->fail(CX_EINVAL, "unknown precision %d (fp32 0, fp16 1, bf16 2)", precision);
    if (precision == CX_PRECISION_BF16 && st->cc_major < 8)
        return st->fail(CX_EINVAL, "bf16 needs a GPU of compute capability 8.0 or newer "
                        "(Ampere); device %d is sm_%d%d: use fp16 (with loss scaling) there",
                        st->device, st->cc_major, st->cc_minor);
    st->precision = precision;
    return CX_OK;
}

/* ---- pinned host memory ---- */

static void *host_alloc(cx_backend *be, size_t bytes) {
    cu_state *st = cu_get(be);
    void *ptr = NULL;
    cudaError_t status = cudaHostAlloc(&ptr, bytes ? bytes : 1, cudaHostAllocDefault);
    if (status != cudaSuccess) {
        cudaGetLastError();
        st->fail(status == cudaErrorMemoryAllocation ? CX_ENOMEM : CX_ERUNTIME,
                 "cudaHostAlloc of %zu bytes of pinned host memory failed: %s", bytes,
                 cudaGetErrorString(status));
        return NULL;
    }
    return ptr;
}

static void host_free(cx_backend *be, void *ptr) {
    cu_state *st = cu_get(be);
    if (!ptr)
        return;
    if (st->copy_stream) /* an upload queued from this buffer may still be running */
        cu_ok_cuda(st, cudaStreamSynchronize(st->copy_stream), "copy stream (host_free)");
    /* ... or a read-back into it (the trainer's loss records) */
    cu_ok_cuda(st, cudaStreamSynchronize(st->stream), "queued work (host_free)");
    cu_ok_cuda(st, cudaFreeHost(ptr), "cudaFreeHost");
}

/* ---- stream marks ---- */

static cx_status stream_mark(cx_backend *be, int slot) {
    cu_state *st = cu_get(be);
    if (slot < 0 || slot >= CX_CUDA_MARKS)
        return st->fail(CX_EINVAL, "stream mark slot %d is outside 0..%d", slot,
                        CX_CUDA_MARKS - 1);
    cudaError_t e = cudaSuccess;
    if (!st->marks[slot])
        e = cudaEventCreateWithFlags(&st->marks[slot], cudaEventDisableTiming);
    if (e == cudaSuccess)
        e = cudaEventRecord(st->marks[slot], st->stream);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return st->fail(CX_ERUNTIME, "stream mark %d on device %d: %s", slot, st->device,
                        cudaGetErrorString(e));
    }
    return CX_OK;
}

static cx_status stream_wait_mark(cx_backend *be, int slot) {
    cu_state *st = cu_get(be);
    if (slot < 0 || slot >= CX_CUDA_MARKS || !st->marks[slot])
        return st->fail(CX_EINVAL, "stream mark slot %d was never recorded", slot);
    /* another thread (the trainer's communication thread): its current device is 0 until
     * set, and a call on device 0 would make a context there for nothing */
    cudaError_t e = cudaSetDevice(st->device);
    if (e == cudaSuccess)
        e = cudaEventSynchronize(st->marks[slot]);
    if (e != cudaSuccess)
        return st->fail(CX_ERUNTIME, "waiting for stream mark %d on device %d: %s", slot,
                        st->device, cudaGetErrorString(e));
    return CX_OK;
}

static cx_status memory_info(cx_backend *be, size_t *free_bytes, size_t *total_bytes) {
    cu_state *st = cu_get(be);
    cudaError_t e = cudaSetDevice(st->device);
    if (e == cudaSuccess)
        e = cudaMemGetInfo(free_bytes, total_bytes);
    if (e != cudaSuccess)
        return st->fail(CX_ERUNTIME, "cudaMemGetInfo on device %d: %s", st->device,
                        cudaGetErrorString(e));
    return CX_OK;
}

/* ---- the data path's copy stream ---- */

static cx_status copy_stream_setup(cx_backend *be) {
    cu_state *st = cu_get(be);
    if (st->copy_stream)
        return CX_OK;
    cudaError_t e = cudaStreamCreateWithFlags(&st->copy_stream, cudaStreamNonBlocking);
    for (int i = 0; i < CX_CUDA_COPY_SLOTS && e == cudaSuccess; i++) {
        e = cudaEventCreateWithFlags(&st->copy_done[i], cudaEventDisableTiming);
        if (e == cudaSuccess)
            e = cudaEventCreateWithFlags(&st->copy_free[i], cudaEventDisableTiming);
        if (e == cudaSuccess) /* recorded from the start: copy_upload always waits for it,
                                 and only be's thread records it again (no flag to share) */
            e = cudaEventRecord(st->copy_free[i], st->stream);
    }
    if (e != cudaSuccess) { /* undo, so that a later setup tries again from nothing */
        cudaGetLastError();
        for (int i = 0; i < CX_CUDA_COPY_SLOTS; i++) {
            if (st->copy_done[i])
                cudaEventDestroy(st->copy_done[i]);
            if (st->copy_free[i])
                cudaEventDestroy(st->copy_free[i]);
        }
        if (st->copy_stream)
            cudaStreamDestroy(st->copy_stream);
        memset(st->copy_done, 0, sizeof st->copy_done);
        memset(st->copy_free, 0, sizeof st->copy_free);
        st->copy_stream = NULL;
        return st->fail(CX_ERUNTIME, "creating the copy stream on device %d: %s", st->device,
                        cudaGetErrorString(e));
    }
    return CX_OK;
}

/* The copy-slot calls' argument check: CX_EINVAL (through fail, naming the call) unless
 * copy_stream_setup ran and `slot` is one of its slots. */
static cx_status copy_slot_ok(cu_state *st, int slot, const char *call) {
    if (st->copy_stream && slot >= 0 && slot < CX_CUDA_COPY_SLOTS)
        return CX_OK;
    return st->fail(CX_EINVAL, "%s: slot %d without copy_stream_setup", call, slot);
}

/* Their CUDA result: CX_OK, or CX_ERUNTIME through fail naming what was done to `slot`. */
static cx_status copy_slot_result(cu_state *st, cudaError_t e, const char *what, int slot) {
    if (e == cudaSuccess)
        return CX_OK;
    return st->fail(CX_ERUNTIME, "%s (batch buffer %d) on device %d: %s", what, slot,
                    st->device, cudaGetErrorString(e));
}

static cx_status copy_upload(cx_backend *be, void *dst, const void *src, size_t bytes, int slot) {
    cu_state *st = cu_get(be);
    CX_TRY(copy_slot_ok(st, slot, "copy_upload"));
    /* the prefetch's worker thread: its current device is 0 until set (stream_wait_mark) */
    cudaError_t e = cudaSetDevice(st->device);
    if (e == cudaSuccess) /* the model's reads of dst (copy_release) come first */
        e = cudaStreamWaitEvent(st->copy_stream, st->copy_free[slot], 0);
    if (e == cudaSuccess && bytes)
        e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, st->copy_stream);
    if (e == cudaSuccess)
        e = cudaEventRecord(st->copy_done[slot], st->copy_stream);
    return copy_slot_result(st, e, "batch upload on the copy stream", slot);
}

static cx_status wait_copy(cx_backend *be, int slot) {
    cu_state *st = cu_get(be);
    CX_TRY(copy_slot_ok(st, slot, "wait_copy"));
    return copy_slot_result(st, cudaStreamWaitEvent(st->stream, st->copy_done[slot], 0),
                            "waiting for the batch upload", slot);
}

static cx_status copy_release(cx_backend *be, int slot) {
    cu_state *st = cu_get(be);
    CX_TRY(copy_slot_ok(st, slot, "copy_release"));
    return copy_slot_result(st, cudaEventRecord(st->copy_free[slot], st->stream),
                            "releasing the batch buffer", slot);
}

static cx_status copy_claim(cx_backend *be, int slot) {
    cu_state *st = cu_get(be);
    CX_TRY(copy_slot_ok(st, slot, "copy_claim"));
    cudaError_t e = cudaSetDevice(st->device); /* the worker thread, as in copy_upload */
    if (e == cudaSuccess) /* an event never recorded has completed */
        e = cudaEventSynchronize(st->copy_done[slot]);
    return copy_slot_result(st, e, "waiting for the last upload from the batch buffer", slot);
}

static char build_text[256];

static cx_cuda_api api = {
    CX_CUDA_ABI_VERSION, sizeof(cx_backend), build_text,
    device_count,        runtime_info,       backend_create, destroy,
    optim_workspace_bytes, optim_step,       optim_reset,    optim_read_result,
    copy_bytes,
    /* filled by cu_nccl_fill_api (nccl.cu) */
    NULL,                NULL,               NULL,           NULL,
    NULL,                NULL,               NULL,           NULL,
    backend_set_precision, host_alloc,    host_free,
    stream_mark,         stream_wait_mark,   memory_info,
    copy_stream_setup,   copy_upload,        wait_copy,
    copy_release,        copy_claim,
};

CU_EXPORT const cx_cuda_api *cx_cuda_get_api(int abi_version) {
    if (abi_version != CX_CUDA_ABI_VERSION)
        return NULL;
    cu_nccl_fill_api(&api);
    /* __CUDA_ARCH_LIST__ (nvcc) lists the targets compiled in, e.g. 750,800 */
    snprintf(build_text, sizeof build_text,
             "built with CUDA %d.%d, cuBLAS %d.%d, cuDNN %d.%d.%d, %s for compute %s",
             CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10, CUBLAS_VER_MAJOR,
             CUBLAS_VER_MINOR, CUDNN_MAJOR, CUDNN_MINOR, CUDNN_PATCHLEVEL, api.nccl_build,
             CU_STR(__CUDA_ARCH_LIST__));
    return &api;
}
