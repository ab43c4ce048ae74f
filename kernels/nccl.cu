/* NCCL for the collectives of a data-parallel run between GPU ranks: the nccl_* entries of
 * the library's table (ops/cuda_abi.h, where the contract of each is written). Host code
 * only. Built by nvcc against the real NCCL (linked by setup.py) and, with -DCX_EMU,
 * against the emulated NCCL of csrc/emu (docs/emulator.md, "The emulated NCCL"): the
 * real-NCCL build compiles and links but has never run on a GPU.
 *
 * The watchdog. NCCL calls on a non-blocking communicator return at once; the work
 * completes later, or never when a peer is missing or dead. So every wait here is one loop
 * (wait_done) that polls ncclCommGetAsyncError (the init and the acceptance of a call:
 * ncclInProgress until done; an error such as a peer's abort) and then cudaStreamQuery on
 * the communicator's stream (the collective's completion), sleeping 20 us doubling to 1
 * ms between polls, until done, an error, an abort request (nccl_abort from another
 * thread) or the timeout. On anything but done it calls ncclCommAbort and fails with a
 * message naming the operation, the rank and the timeout. No call here exits or aborts the
 * process. */
#include "common.cuh"

#include <nccl.h>

#include <atomic>
#include <new>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static_assert(NCCL_UNIQUE_ID_BYTES == CX_NCCL_ID_BYTES, "ncclUniqueId size");

#define CU_NCCL_STAGING_BYTES ((size_t)4 << 20) /* host data goes through in chunks of this */

struct cx_nccl {
    cx_fail_fn fail;
    int device, rank, world;
    double timeout_s;
    ncclComm_t comm;       /* NULL once aborted */
    cudaStream_t stream;   /* the communication stream (non-blocking) */
    void *staging;         /* device buffer for host data and the barrier's float */
    size_t staging_bytes;
    pthread_mutex_t running; /* held by the call in progress (nccl_abort tries it) */
    std::atomic<int> abort_requested;
    char failed[768];      /* the first error; later calls fail with it at once */
};

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Holds `running`. */
static void abort_locked(cx_nccl *c) {
    if (c->comm) {
        ncclCommAbort(c->comm);
        c->comm = NULL;
    }
}

/* Records the first error (printf-style), aborts the NCCL communicator and reports the
 * error through `fail`. Holds `running`. */
static cx_status fail_and_abort(cx_nccl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static cx_status fail_and_abort(cx_nccl *c, const char *fmt, ...) {
    if (!c->failed[0]) {
        va_list args;
        va_start(args, fmt);
        vsnprintf(c->failed, sizeof c->failed, fmt, args);
        va_end(args);
    }
    abort_locked(c);
    return c->fail(CX_ERUNTIME, "%s", c->failed);
}

/* The watchdog loop (see the top of the file). stream_too: also wait for the stream. */
static cx_status wait_done(cx_nccl *c, const char *what, int stream_too) {
    double start = now_seconds();
    long pause_ns = 20000;
    for (;;) {
        if (c->abort_requested.load())
            return fail_and_abort(c, "NCCL %s on rank %d of %d: the communicator was aborted "
                                  "while it waited", what, c->rank, c->world);
        ncclResult_t async = ncclSuccess;
        ncclResult_t got = ncclCommGetAsyncError(c->comm, &async);
        if (got != ncclSuccess)
            async = got;
        if (async != ncclSuccess && async != ncclInProgress)
            return fail_and_abort(c, "NCCL %s on rank %d of %d failed: %s (%s); the communicator "
                                  "is aborted", what, c->rank, c->world, ncclGetErrorString(async),
                                  ncclGetLastError(c->comm));
        if (async == ncclSuccess) {
            if (!stream_too)
                return CX_OK;
            cudaError_t q = cudaStreamQuery(c->stream);
            if (q == cudaSuccess)
                return CX_OK;
            if (q != cudaErrorNotReady)
                return fail_and_abort(c, "NCCL %s on rank %d of %d: CUDA error on the "
                                      "communication stream: %s (%s); the communicator is "
                                      "aborted", what, c->rank, c->world, cudaGetErrorString(q),
                                      cudaGetErrorName(q));
        }
        if (c->timeout_s > 0 && now_seconds() - start > c->timeout_s)
            return fail_and_abort(c, "NCCL %s on rank %d of %d did not complete within the "
                                  "timeout of %g s (a rank that never arrived or stopped "
                                  "taking part); the communicator is aborted", what, c->rank,
                                  c->world, c->timeout_s);
        struct timespec pause = {0, pause_ns};
        nanosleep(&pause, NULL);
        pause_ns = pause_ns < 1000000 ? pause_ns * 2 : 1000000;
    }
}

/* Starts a call: takes `running`, fails at once after an earlier failure or an abort. */
static cx_status enter(cx_nccl *c, const char *what) {
    pthread_mutex_lock(&c->running);
    if (c->abort_requested.load() && !c->failed[0])
        snprintf(c->failed, sizeof c->failed, "NCCL %s on rank %d of %d: the communicator was "
                 "aborted", what, c->rank, c->world);
    if (c->failed[0]) {
        abort_locked(c);
        pthread_mutex_unlock(&c->running);
        return c->fail(CX_ERUNTIME, "%s", c->failed);
    }
    cudaSetDevice(c->device);
    return CX_OK;
}

static cx_status leave(cx_nccl *c, cx_status st) {
    pthread_mutex_unlock(&c->running);
    return st;
}

/* Queues one collective on the stream and waits for it (watchdog). dst, src: device. */
static cx_status run_collective(cx_nccl *c, const char *what, int bcast, void *data,
                                size_t count, int average, int root) {
    ncclResult_t r = bcast ? ncclBroadcast(data, data, count, ncclChar, root, c->comm, c->stream)
                           : ncclAllReduce(data, data, count, ncclFloat, average ? ncclAvg : ncclSum,
                                           c->comm, c->stream);
    if (r != ncclSuccess && r != ncclInProgress)
        return fail_and_abort(c, "NCCL %s on rank %d of %d could not be queued: %s (%s); the "
                              "communicator is aborted", what, c->rank, c->world,
                              ncclGetErrorString(r), ncclGetLastError(c->comm));
    return wait_done(c, what, 1);
}

static cx_status copy(cx_nccl *c, const char *what, void *dst, const void *src, size_t bytes,
                      cudaMemcpyKind kind) {
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, c->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(c->stream); /* nothing of NCCL is pending: wait_done ran */
    if (e != cudaSuccess)
        return fail_and_abort(c, "NCCL %s on rank %d of %d: staging copy failed: %s; the "
                              "communicator is aborted", what, c->rank, c->world,
                              cudaGetErrorString(e));
    return CX_OK;
}

/* data: host memory, through the staging buffer in chunks (a float multiple). */
static cx_status staged(cx_nccl *c, const char *what, int bcast, void *data, size_t bytes,
                        int average, int root) {
    char *host = static_cast<char *>(data);
    for (size_t done = 0; done < bytes;) {
        size_t chunk = bytes - done < c->staging_bytes ? bytes - done : c->staging_bytes;
        CX_TRY(copy(c, what, c->staging, host + done, chunk, cudaMemcpyHostToDevice));
        CX_TRY(run_collective(c, what, bcast, c->staging, bcast ? chunk : chunk / sizeof(float),
                              average, root));
        CX_TRY(copy(c, what, host + done, c->staging, chunk, cudaMemcpyDeviceToHost));
        done += chunk;
    }
    return CX_OK;
}

static cx_status nccl_all_reduce(cx_nccl *c, float *data, size_t n, int average, int host) {
    const char *what = average ? "all_reduce (ncclAvg)" : "all_reduce (ncclSum)";
    CX_TRY(enter(c, what));
    if (!n)
        return leave(c, CX_OK);
    cx_status st = host ? staged(c, what, 0, data, n * sizeof(float), average, 0)
                        : run_collective(c, what, 0, data, n, average, 0);
    return leave(c, st);
}

static cx_status nccl_broadcast(cx_nccl *c, void *data, size_t n_bytes, int root, int host) {
    const char *what = "broadcast";
    CX_TRY(enter(c, what));
    if (!n_bytes)
        return leave(c, CX_OK);
    cx_status st = host ? staged(c, what, 1, data, n_bytes, 0, root)
                        : run_collective(c, what, 1, data, n_bytes, 0, root);
    return leave(c, st);
}

static cx_status nccl_barrier(cx_nccl *c) {
    const char *what = "barrier (an all_reduce of one float)";
    CX_TRY(enter(c, what));
    return leave(c, run_collective(c, what, 0, c->staging, 1, 0, 0));
}

static void nccl_abort(cx_nccl *c) {
    if (!c)
        return;
    c->abort_requested.store(1);
    if (pthread_mutex_trylock(&c->running) == 0) { /* no call runs: abort now */
        if (!c->failed[0])
            snprintf(c->failed, sizeof c->failed, "NCCL communicator of rank %d of %d: aborted",
                     c->rank, c->world);
        abort_locked(c);
        pthread_mutex_unlock(&c->running);
    } /* else the running call's watchdog sees the request at its next poll */
}

static void nccl_destroy(cx_nccl *c) {
    if (!c)
        return;
    pthread_mutex_lock(&c->running);
    cudaSetDevice(c->device);
    if (c->comm && !c->failed[0]) {
        ncclResult_t r = ncclCommFinalize(c->comm); /* flushes; non-blocking: then poll */
        if ((r == ncclSuccess || r == ncclInProgress) &&
            wait_done(c, "finalize", 0) == CX_OK && c->comm)
            ncclCommDestroy(c->comm);
        else
            abort_locked(c);
        c->comm = NULL;
    }
    abort_locked(c);
    if (c->staging)
        cudaFree(c->staging);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    pthread_mutex_unlock(&c->running);
    pthread_mutex_destroy(&c->running);
    delete c;
}

static cx_status nccl_unique_id(cx_fail_fn fail, unsigned char *id) {
    ncclUniqueId unique;
    ncclResult_t r = ncclGetUniqueId(&unique);
    if (r != ncclSuccess)
        return fail(CX_ERUNTIME, "ncclGetUniqueId failed: %s (%s)", ncclGetErrorString(r),
                    ncclGetLastError(NULL));
    memcpy(id, unique.internal, CX_NCCL_ID_BYTES);
    return CX_OK;
}

static cx_status nccl_create(const cx_nccl_config *config, cx_nccl **out) {
    cx_fail_fn fail = config->fail;
    *out = NULL;
    if (config->world < 1 || config->rank < 0 || config->rank >= config->world)
        return fail(CX_EINVAL, "NCCL communicator: rank %d of %d", config->rank, config->world);
    cx_nccl *c = new (std::nothrow) cx_nccl();
    if (!c)
        return fail(CX_ENOMEM, "out of memory creating the NCCL communicator");
    c->fail = fail;
    c->device = config->device;
    c->rank = config->rank;
    c->world = config->world;
    c->timeout_s = config->timeout_s;
    pthread_mutex_init(&c->running, NULL);
    c->staging_bytes = CU_NCCL_STAGING_BYTES;
    cudaError_t e = cudaSetDevice(config->device);
    if (e == cudaSuccess)
        e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e == cudaSuccess)
        e = cudaMalloc(&c->staging, c->staging_bytes);
    if (e != cudaSuccess) {
        nccl_destroy(c);
        return fail(e == cudaErrorMemoryAllocation ? CX_ENOMEM : CX_ERUNTIME,
                    "NCCL communicator on device %d: %s (%s)", config->device,
                    cudaGetErrorString(e), cudaGetErrorName(e));
    }
    ncclUniqueId id;
    memcpy(id.internal, config->id, CX_NCCL_ID_BYTES);
    ncclConfig_t nccl_config = NCCL_CONFIG_INITIALIZER;
    nccl_config.blocking = 0; /* every wait is ours, bounded by the watchdog */
    ncclResult_t r = ncclCommInitRankConfig(&c->comm, config->world, id, config->rank,
                                            &nccl_config);
    cx_status st;
    pthread_mutex_lock(&c->running);
    if (r != ncclSuccess && r != ncclInProgress)
        st = fail_and_abort(c, "NCCL init (ncclCommInitRankConfig) on rank %d of %d failed: %s "
                            "(%s)", config->rank, config->world, ncclGetErrorString(r),
                            ncclGetLastError(c->comm));
    else
        st = wait_done(c, "init (ncclCommInitRankConfig: waiting for every rank to join)", 0);
    pthread_mutex_unlock(&c->running);
    if (st != CX_OK) {
        nccl_destroy(c);
        return st;
    }
    *out = c;
    return CX_OK;
}

static char nccl_build_text[64];

void cu_nccl_fill_api(cx_cuda_api *api) {
#ifdef CX_EMU
    const char *kind = "emulated NCCL";
#else
    const char *kind = "NCCL";
#endif
    snprintf(nccl_build_text, sizeof nccl_build_text, "%s %d.%d.%d", kind, NCCL_MAJOR,
             NCCL_MINOR, NCCL_PATCH);
    api->nccl_build = nccl_build_text;
    api->nccl_unique_id = nccl_unique_id;
    api->nccl_create = nccl_create;
    api->nccl_all_reduce = nccl_all_reduce;
    api->nccl_broadcast = nccl_broadcast;
    api->nccl_barrier = nccl_barrier;
    api->nccl_abort = nccl_abort;
    api->nccl_destroy = nccl_destroy;
}
