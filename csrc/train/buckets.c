/* Gradient buckets overlapping backward (buckets.h): one communication thread per trainer.
 *
 * State, under `lock`: the step's span [begin, end), `next_hi` (buckets [lo, next_hi) from
 * next_hi down are still to do), `ready` (gradients at offsets >= ready are final) with
 * the stream mark recorded at each release, and `finishing` (everything is final). The
 * thread takes the bucket below next_hi once it lies wholly above `ready`. */
#include "buckets.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RELEASES CX_CUDA_MARKS

struct cx_buckets {
    cx_buckets_config cfg;
    pthread_t thread;
    int started;
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    /* under lock */
    int active, finishing, quit;
    size_t begin, end, next_hi;
    /* releases of this step: offset, and the mark slot recorded with it (device) */
    int n_releases;
    size_t release_offset[MAX_RELEASES];
    cx_status status;
    char error[512];
    int64_t last_early; /* buckets of the last step released before finish */
};

/* Under lock: the low end of the bucket below hi. */
static size_t bucket_lo(const cx_buckets *b, size_t hi) {
    return hi - b->begin > b->cfg.bucket_floats ? hi - b->cfg.bucket_floats : b->begin;
}

/* Under lock: whether the bucket [lo, ...) may go, and the mark to wait for (-1: none,
 * the stream is idle or the memory is the host's). */
static int bucket_ready(const cx_buckets *b, size_t lo, int *mark) {
    *mark = -1;
    for (int i = 0; i < b->n_releases; i++)
        if (b->release_offset[i] <= lo) {
            *mark = b->cfg.be ? i : -1;
            return 1;
        }
    return b->finishing; /* finish: the backward has returned, its stream is synchronized */
}

static cx_status reduce(cx_buckets *b, size_t lo, size_t hi, int mark) {
    if (mark >= 0)
        CX_TRY(b->cfg.api->stream_wait_mark(b->cfg.be, mark));
    return cx_comm_all_reduce_mean(b->cfg.comm, b->cfg.grads + lo, hi - lo);
}

static void *thread_main(void *arg) {
    cx_buckets *b = arg;
    pthread_mutex_lock(&b->lock);
    for (;;) {
        int mark = -1;
        size_t lo = 0, hi = 0;
        while (!b->quit) {
            if (b->active && b->next_hi > b->begin) {
                hi = b->next_hi;
                lo = bucket_lo(b, hi);
                if (b->status == CX_OK && bucket_ready(b, lo, &mark))
                    break;
                if (b->status != CX_OK) { /* after an error: skip the rest */
                    b->next_hi = b->begin;
                    pthread_cond_broadcast(&b->done);
                    continue;
                }
            }
            pthread_cond_wait(&b->wake, &b->lock);
        }
        if (b->quit)
            break;
        pthread_mutex_unlock(&b->lock);
        cx_status st = reduce(b, lo, hi, mark);
        pthread_mutex_lock(&b->lock);
        if (st != CX_OK && b->status == CX_OK) {
            b->status = st; /* the message is this thread's: keep it for finish */
            snprintf(b->error, sizeof b->error, "%s", cx_last_error());
        }
        b->next_hi = lo;
        pthread_cond_broadcast(&b->done);
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

cx_status cx_buckets_create(const cx_buckets_config *config, cx_buckets **out) {
    *out = NULL;
    if (!config->comm || !config->grads || config->bucket_floats == 0 ||
        (config->be && !config->api))
        return cx_fail(CX_EINVAL, "gradient buckets: a communicator, the gradients, a bucket "
                       "size and (device) the library table are needed");
    cx_buckets *b = calloc(1, sizeof *b);
    if (!b)
        return cx_fail(CX_ENOMEM, "out of memory for the gradient buckets");
    b->cfg = *config;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->wake, NULL);
    pthread_cond_init(&b->done, NULL);
    if (pthread_create(&b->thread, NULL, thread_main, b) != 0) {
        cx_buckets_free(b);
        return cx_fail(CX_ERUNTIME, "could not start the gradient communication thread");
    }
    b->started = 1;
    *out = b;
    return CX_OK;
}

void cx_buckets_free(cx_buckets *b) {
    if (!b)
        return;
    if (b->started) {
        pthread_mutex_lock(&b->lock);
        b->quit = 1;
        pthread_cond_broadcast(&b->wake);
        pthread_mutex_unlock(&b->lock);
        pthread_join(b->thread, NULL);
    }
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->wake);
    pthread_cond_destroy(&b->done);
    free(b);
}

void cx_buckets_begin(cx_buckets *b, size_t begin, size_t end) {
    pthread_mutex_lock(&b->lock);
    b->begin = begin;
    b->end = end;
    b->next_hi = end > begin ? end : begin;
    b->n_releases = 0;
    b->finishing = 0;
    b->status = CX_OK;
    b->error[0] = '\0';
    b->active = 1;
    pthread_mutex_unlock(&b->lock);
}

void cx_buckets_grads_final(void *ctx, size_t offset) {
    cx_buckets *b = ctx;
    pthread_mutex_lock(&b->lock);
    int slot = b->n_releases;
    int useful = b->active && !b->finishing && slot < MAX_RELEASES && b->next_hi > b->begin &&
                 (slot == 0 || offset < b->release_offset[slot - 1]);
    pthread_mutex_unlock(&b->lock);
    if (!useful) /* nothing new (or no mark slot left: finish releases it) */
        return;
    /* the mark first, then the release: the thread never waits on an unrecorded mark. A
     * failed mark only loses the overlap: finish reduces the rest after the backward. */
    if (b->cfg.be && b->cfg.api->stream_mark(b->cfg.be, slot) != CX_OK)
        return;
    pthread_mutex_lock(&b->lock);
    b->release_offset[slot] = offset;
    b->n_releases = slot + 1;
    pthread_cond_broadcast(&b->wake);
    pthread_mutex_unlock(&b->lock);
}

cx_status cx_buckets_finish(cx_buckets *b) {
    pthread_mutex_lock(&b->lock);
    if (!b->active) { /* a step whose last backward never ran: every bucket now */
        pthread_mutex_unlock(&b->lock);
        return cx_fail(CX_EINVAL, "gradient buckets: finish without begin");
    }
    /* the buckets the backward released: those wholly above its lowest release */
    b->last_early = 0;
    if (b->n_releases > 0) {
        size_t lowest = b->release_offset[b->n_releases - 1];
        for (size_t hi = b->end; hi > b->begin && bucket_lo(b, hi) >= lowest; hi = bucket_lo(b, hi))
            b->last_early++;
    }
    b->finishing = 1;
    pthread_cond_broadcast(&b->wake);
    while (b->next_hi > b->begin)
        pthread_cond_wait(&b->done, &b->lock);
    b->active = 0;
    cx_status st = b->status;
    char error[sizeof b->error];
    memcpy(error, b->error, sizeof error);
    pthread_mutex_unlock(&b->lock);
    return st == CX_OK ? CX_OK : cx_fail(st, "%s", error);
}

int64_t cx_buckets_early(const cx_buckets *b) { return b->last_early; }
