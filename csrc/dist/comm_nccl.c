/* The NCCL backend of cx_comm (see comm.h): a thin layer over the CUDA library's nccl_*
 * entries (ops/cuda_abi.h; kernels/nccl.cu holds the NCCL calls and the watchdog). Plain
 * C without CUDA headers, like the rest of _C: on a CPU-only build every entry fails
 * because the CUDA library does not load, never silently.
 *
 * The collectives of the table take device memory (device_buffers = 1); the host_*
 * entries stage host memory through the library's device buffer. Abort: the reason is
 * kept here (every later call fails with it), and the library aborts the NCCL
 * communicator at once, or, when a call is running in another thread, at that call's
 * next watchdog poll. */
#include "comm.h"

#include "../ops/cuda_loader.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

_Static_assert(CX_COMM_NCCL_ID_BYTES == CX_NCCL_ID_BYTES, "the NCCL unique id's size");

typedef struct {
    cx_comm base;
    const cx_cuda_api *api;
    cx_nccl *nccl;          /* the library's communicator (owned) */
    pthread_mutex_t lock;   /* guards aborted and reason (abort may come from any thread) */
    int aborted;
    char reason[512];       /* the first abort's reason */
} nccl_comm;

static nccl_comm *of(cx_comm *base) { return (nccl_comm *)base; }

/* CX_OK, or the abort's reason as the error of this call. */
static cx_status check_not_aborted(nccl_comm *c, const char *what) {
    pthread_mutex_lock(&c->lock);
    int aborted = c->aborted;
    char reason[sizeof c->reason];
    snprintf(reason, sizeof reason, "%s", c->reason);
    pthread_mutex_unlock(&c->lock);
    if (aborted)
        return cx_fail(CX_ERUNTIME, "NCCL %s on rank %d: the communicator was aborted: %s", what,
                       c->base.rank, reason);
    return CX_OK;
}

static int nccl_aborted(cx_comm *base) {
    nccl_comm *c = of(base);
    pthread_mutex_lock(&c->lock);
    int aborted = c->aborted;
    pthread_mutex_unlock(&c->lock);
    return aborted;
}

/* Fault injection (comm.h): this rank never enqueues its all-reduce; its peers' NCCL
 * calls wait until their watchdog's timeout aborts them. */
static cx_status stall_if_asked(nccl_comm *c) {
    if (!c->base.stall_next_all_reduce)
        return CX_OK;
    c->base.stall_next_all_reduce = 0;
    cx_comm_stall_until_aborted(&c->base, nccl_aborted);
    return check_not_aborted(c, "all_reduce");
}

static cx_status nccl_sum(cx_comm *base, float *data, size_t n) {
    nccl_comm *c = of(base);
    CX_TRY(check_not_aborted(c, "all_reduce"));
    CX_TRY(stall_if_asked(c));
    return c->api->nccl_all_reduce(c->nccl, data, n, 0, 0);
}

static cx_status nccl_mean(cx_comm *base, float *data, size_t n) {
    nccl_comm *c = of(base);
    CX_TRY(check_not_aborted(c, "all_reduce"));
    CX_TRY(stall_if_asked(c));
    return c->api->nccl_all_reduce(c->nccl, data, n, 1, 0);
}

static cx_status nccl_bcast(cx_comm *base, void *data, size_t n_bytes, int root) {
    nccl_comm *c = of(base);
    CX_TRY(check_not_aborted(c, "broadcast"));
    return c->api->nccl_broadcast(c->nccl, data, n_bytes, root, 0);
}

static cx_status nccl_host_sum(cx_comm *base, float *data, size_t n) {
    nccl_comm *c = of(base);
    CX_TRY(check_not_aborted(c, "all_reduce"));
    CX_TRY(stall_if_asked(c));
    return c->api->nccl_all_reduce(c->nccl, data, n, 0, 1);
}

static cx_status nccl_host_bcast(cx_comm *base, void *data, size_t n_bytes, int root) {
    nccl_comm *c = of(base);
    CX_TRY(check_not_aborted(c, "broadcast"));
    return c->api->nccl_broadcast(c->nccl, data, n_bytes, root, 1);
}

static cx_status nccl_barrier(cx_comm *base) {
    nccl_comm *c = of(base);
    CX_TRY(check_not_aborted(c, "barrier"));
    return c->api->nccl_barrier(c->nccl);
}

static void nccl_abort(cx_comm *base, const char *reason) {
    nccl_comm *c = of(base);
    pthread_mutex_lock(&c->lock);
    if (!c->aborted) {
        c->aborted = 1;
        snprintf(c->reason, sizeof c->reason, "%s", reason);
    }
    pthread_mutex_unlock(&c->lock);
    c->api->nccl_abort(c->nccl); /* never waits for peers */
}

static void nccl_destroy(cx_comm *base) {
    nccl_comm *c = of(base);
    c->api->nccl_destroy(c->nccl);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static const cx_comm_ops nccl_ops = {
    .name = "nccl",
    .device_buffers = 1,
    .all_reduce_sum = nccl_sum,
    .all_reduce_mean = nccl_mean,
    .broadcast = nccl_bcast,
    .barrier = nccl_barrier,
    .host_all_reduce_sum = nccl_host_sum,
    .host_broadcast = nccl_host_bcast,
    .abort = nccl_abort,
    .destroy = nccl_destroy,
};

int cx_comm_nccl_available(char *reason, size_t reason_size, const char **build) {
    const cx_cuda_api *api = NULL;
    if (cx_cuda_load(&api) != CX_OK) {
        snprintf(reason, reason_size, "%s", cx_last_error());
        return 0;
    }
    if (!api->nccl_create || !api->nccl_unique_id) {
        snprintf(reason, reason_size, "the CUDA library has no NCCL entries");
        return 0;
    }
    if (build)
        *build = api->nccl_build;
    snprintf(reason, reason_size, "%s", api->nccl_build);
    return 1;
}

cx_status cx_comm_nccl_unique_id(unsigned char *id) {
    const cx_cuda_api *api = NULL;
    CX_TRY(cx_cuda_load(&api));
    return api->nccl_unique_id(cx_fail, id);
}

cx_status cx_comm_nccl_create(const unsigned char *unique_id, int rank, int world, int device,
                              double timeout_s, cx_comm **out) {
    *out = NULL;
    if (world < 1 || world > CX_COMM_MAX_RANKS || rank < 0 || rank >= world)
        return cx_fail(CX_EINVAL, "rank %d is not in a world of %d (1..%d ranks)", rank, world,
                       CX_COMM_MAX_RANKS);
    if (!unique_id)
        return cx_fail(CX_EINVAL, "the NCCL communicator needs a unique id");
    const cx_cuda_api *api = NULL;
    CX_TRY(cx_cuda_load(&api));
    nccl_comm *c = calloc(1, sizeof *c);
    if (!c)
        return cx_fail(CX_ENOMEM, "out of memory creating the NCCL communicator");
    cx_nccl_config config = {.fail = cx_fail, .device = device, .id = unique_id, .rank = rank,
                             .world = world, .timeout_s = timeout_s};
    cx_status st = api->nccl_create(&config, &c->nccl);
    if (st != CX_OK) {
        free(c);
        return st;
    }
    c->api = api;
    pthread_mutex_init(&c->lock, NULL);
    c->base = (cx_comm){.ops = &nccl_ops, .rank = rank, .world = world, .timeout_s = timeout_s};
    *out = &c->base;
    return CX_OK;
}
