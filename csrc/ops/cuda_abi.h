/* The ABI between codext._C and libcodext_cuda.so (kernels/): the one entry point the
 * library exports and the tables the two sides exchange. Plain C, included by both the
 * loader (ops/cuda_loader.c) and the library; it carries nothing but the backend
 * interface (ops.h) and these tables. The library has no copy of _C's error state: the
 * loader hands it _C's cx_fail through cx_cuda_config so that device errors land in the
 * message Python raises. */
#ifndef CX_CUDA_ABI_H
#define CX_CUDA_ABI_H

#include "cuda_optim.h"
#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever cx_cuda_api, cx_cuda_config or cx_backend change shape, so a stale
 * libcodext_cuda.so next to a newer _C is refused with a clear message.
 * 3: the device optimizer (optim_*) and copy_bytes.
 * 4: NCCL (nccl_*).
 * 5: mixed precision (backend_set_precision), pinned host memory (host_alloc, host_free),
 *    stream marks (stream_mark, stream_wait_mark), memory_info, the copy stream
 *    (copy_stream_setup, copy_upload, wait_copy).
 * 6: cx_backend.pending (the trainer's passes queue without waiting); copy_release and
 *    copy_claim (the copy slots' reuse without a wait for the model's stream). */
#define CX_CUDA_ABI_VERSION 6
#define CX_CUDA_ENTRY_POINT "cx_cuda_get_api"
#define CX_CUDA_LIBRARY_NAME "libcodext_cuda.so"
#define CX_CUDA_MARKS 16
#define CX_CUDA_COPY_SLOTS 2

typedef cx_status (*cx_fail_fn)(cx_status code, const char *fmt, ...);

typedef struct {
    int device;        /* CUDA device ordinal */
    int deterministic; /* 1: only bit-reproducible algorithms (cuDNN, cuBLAS atomics off) */
    int allow_tf32;    /* 0 (default): fp32 products stay fp32 (no TF32 tensor cores) */
    cx_fail_fn fail;   /* the caller's cx_fail: receives every error message */
} cx_cuda_config;

/* The precision of a CUDA backend's products (backend_set_precision; kernels/precision.cu):
 * FP32: every op in float32 (the default; the CPU backend's arithmetic);
 * FP16, BF16: mixed precision. The matrix products (linear) and dense convolutions take
 *   their operands rounded to half (bf16) and accumulate in float32; every buffer the ops
 *   exchange stays float32, and so do norms, softmax, reductions, the loss and the
 *   optimizer. BF16 needs compute capability 8.0 or newer. */
typedef enum { CX_PRECISION_FP32 = 0, CX_PRECISION_FP16 = 1, CX_PRECISION_BF16 = 2 } cx_precision;

/* NCCL (kernels/nccl.cu): the communicator of one GPU rank of a data-parallel run. */
#define CX_NCCL_ID_BYTES 128 /* NCCL_UNIQUE_ID_BYTES */
typedef struct cx_nccl cx_nccl; /* the library's; opaque to _C */

typedef struct {
    cx_fail_fn fail;          /* receives every error message of this communicator */
    int device;               /* CUDA device ordinal of this rank */
    const unsigned char *id;  /* [CX_NCCL_ID_BYTES] from nccl_unique_id on one rank */
    int rank, world;
    double timeout_s;         /* bound of every wait (init, each collective); <= 0: none */
} cx_nccl_config;

typedef struct {
    int abi_version;    /* CX_CUDA_ABI_VERSION of the library */
    size_t backend_size;/* sizeof(cx_backend) the library was compiled with */
    const char *build;  /* "CUDA 13.0, cuDNN 9.19.0, archs sm_75" (compile time) */
    /* Number of usable devices. Fails (through `fail`) with cudaGetDeviceCount's error
     * text when there is no driver or no device; never creates a context. */
    cx_status (*device_count)(cx_fail_fn fail, int *count);
    /* Driver, runtime, cuBLAS and cuDNN versions and the device's name and arch, as one
     * line of text (creates no context). */
    cx_status (*runtime_info)(cx_fail_fn fail, int device, char *text, size_t size);
    /* A CUDA backend on config->device: its own stream, cuBLAS and cuDNN handles. Sets
     * the calling thread's current device; its ops run on the calling thread's current
     * device, so a process drives one device (one worker per GPU). */
    cx_status (*backend_create)(const cx_cuda_config *config, cx_backend **out);
    void (*backend_destroy)(cx_backend *be); /* waits for queued work; NULL is fine */

    /* ---- the device optimizer of the trainer (ops/cuda_optim.h), on `be`'s stream ----
     * `be` is a backend of this library; every pointer in cu_optim_buffers and `mask` is
     * device memory. optim_step and optim_reset queue their work: an invalid argument fails
     * at once (CX_EINVAL, through `fail`), a launch error is recorded for the next sync().
     * optim_read_result is the step's one read-back: it copies the last step's outcome
     * (norm, clip factor, applied) to `out` and waits for the stream, reporting the first
     * error recorded since the last sync() as sync() does. */
    size_t (*optim_workspace_bytes)(int count, size_t total);
    cx_status (*optim_step)(cx_backend *be, const cu_optim_buffers *buffers,
                            const unsigned char *mask, const cu_optim_config *config);
    cx_status (*optim_reset)(cx_backend *be, const cu_optim_buffers *buffers);
    cx_status (*optim_read_result)(cx_backend *be, const cu_optim_buffers *buffers,
                                   cu_optim_result *out);
    /* Bytes (not floats: step counts, masks, parameter tables) between host and device on
     * `be`'s stream; to_device 1: host `src` to device `dst` (src may be reused on return),
     * 0: device `src` to host `dst`, there after the next sync(). Errors are recorded. */
    void (*copy_bytes)(cx_backend *be, void *dst, const void *src, size_t bytes, int to_device);

    /* ---- NCCL (kernels/nccl.cu; docs/distributed.md, "Collectives") ----
     * A communicator is non-blocking (ncclConfig_t.blocking = 0) with a stream of its own
     * on config->device. Every wait (the init, each collective's completion) is a watchdog
     * loop that polls ncclCommGetAsyncError and cudaStreamQuery and is bounded by
     * timeout_s: on a timeout, an async error or an abort request it aborts the NCCL
     * communicator (ncclCommAbort) and fails (through config->fail) naming the operation,
     * the rank and the timeout; every later call then fails at once with that first error.
     * nccl_build: the NCCL the library was built against ("NCCL 2.28.9", or "emulated
     * NCCL 2.28.0"). */
    const char *nccl_build;
    /* id [CX_NCCL_ID_BYTES]: a fresh ncclUniqueId (one rank makes it, all ranks use it). */
    cx_status (*nccl_unique_id)(cx_fail_fn fail, unsigned char *id);
    /* Joins the communicator; waits (watchdog) until every rank has joined. */
    cx_status (*nccl_create)(const cx_nccl_config *config, cx_nccl **out);
    /* data [n] float32, replaced by the sum over the ranks (average 0: ncclSum) or the mean
     * (average 1: ncclAvg). host 0: `data` is device memory of this rank's device whose
     * writers have finished (the caller synchronized their stream); it is reduced in place
     * on the communicator's stream, and no copy is made. host 1: host memory, staged through
     * the communicator's device buffer in chunks. Returns once the result is in `data`. */
    cx_status (*nccl_all_reduce)(cx_nccl *comm, float *data, size_t n, int average, int host);
    /* data [n_bytes]: root's bytes into every rank's `data` (device or host memory, as above). */
    cx_status (*nccl_broadcast)(cx_nccl *comm, void *data, size_t n_bytes, int root, int host);
    /* An all-reduce of one float of the communicator's device buffer. */
    cx_status (*nccl_barrier)(cx_nccl *comm);
    /* ncclCommAbort, now when no call runs, else by the running call's watchdog at its next
     * poll (which then fails). Thread-safe, callable any time, never waits for peers. */
    void (*nccl_abort)(cx_nccl *comm);
    /* Finalizes (bounded by the timeout; aborts instead when it fails) and frees; NULL is
     * fine. Not while a call runs. */
    void (*nccl_destroy)(cx_nccl *comm);

    /* The precision of `be`'s ops from now on (cx_precision). Fails (CX_EINVAL, through the
     * backend's fail) for an unknown value, or BF16 on a device older than sm_80, naming
     * the device; the precision is then unchanged. */
    cx_status (*backend_set_precision)(cx_backend *be, int precision);

    /* Page-locked (pinned) host memory for the batches the trainer uploads (cudaHostAlloc):
     * a copy from it is a DMA transfer that need not be staged. NULL on failure, with the
     * error reported through the backend's fail; host_free(be, NULL) is fine. */
    void *(*host_alloc)(cx_backend *be, size_t bytes);
    void (*host_free)(cx_backend *be, void *ptr);

    /* Marks on be's stream, for another thread to wait on (the trainer's gradient buckets,
     * csrc/train/buckets.h): stream_mark records where the stream has got to in slot
     * 0..CX_CUDA_MARKS-1 (a CUDA event, created on the slot's first use); stream_wait_mark,
     * callable from any thread, returns once the stream has passed that record. Neither
     * touches the backend's recorded error: failures go through its fail, on the calling
     * thread. */
    cx_status (*stream_mark)(cx_backend *be, int slot);
    cx_status (*stream_wait_mark)(cx_backend *be, int slot);

    /* The device's free and total memory (cudaMemGetInfo: every process's use counts). */
    cx_status (*memory_info)(cx_backend *be, size_t *free_bytes, size_t *total_bytes);

    /* The copy stream of the trainer's data path (csrc/train/prefetch.h): a second stream
     * of be's device with CX_CUDA_COPY_SLOTS events. setup (once, from the thread that owns
     * be; idempotent) creates them. copy_upload, callable from any thread after setup,
     * queues a host-to-device copy of `bytes` on the copy stream (src: pinned host memory,
     * unchanged until the copy is done) and records slot `slot` behind it. wait_copy makes
     * be's stream wait (on the device, the host does not) for the last copy recorded in
     * `slot`. Failures go through be's fail on the calling thread. */
    cx_status (*copy_stream_setup)(cx_backend *be);
    cx_status (*copy_upload)(cx_backend *be, void *dst, const void *src, size_t bytes, int slot);
    cx_status (*wait_copy)(cx_backend *be, int slot);
    /* Reuse of a slot's buffers while the model's stream runs behind the host (the trainer
     * waits once per step). copy_release, from be's thread: everything queued on be's
     * stream so far (the passes that read the slot's device buffer) comes before the next
     * copy_upload into `slot`: the copy stream waits for it on the device. copy_claim, from
     * the thread about to rewrite the slot's pinned host buffer: returns once the last
     * upload from it is done (at once when it is, or when there was none). */
    cx_status (*copy_release)(cx_backend *be, int slot);
    cx_status (*copy_claim)(cx_backend *be, int slot);
} cx_cuda_api;

/* The library's one exported symbol. NULL when abi_version differs from its own. */
typedef const cx_cuda_api *(*cx_cuda_get_api_fn)(int abi_version);

#ifdef __cplusplus
}
#endif
#endif
