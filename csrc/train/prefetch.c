/* The trainer's batch prefetch (prefetch.h): one worker thread, two buffers, one job at a
 * time. The worker sleeps on `wake` until asked; a take waits on `done`. */
#include "prefetch.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cx_prefetch {
    float *x[2], *y[2];
    size_t x_floats, y_floats;
    cx_host_free_fn release;
    cx_backend *be;
    cx_batch_ready_fn ready;
    cx_batch_claim_fn claim;
    void *ready_ctx;
    int handed; /* the buffer the last take handed out (the step trains on it) */

    pthread_t thread;
    int started;
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    /* under lock */
    int asked;    /* a job is pending or running */
    int finished; /* ... and the worker has finished it */
    int quit;
    cx_batch_job job;
    int job_slot;
    cx_status job_status;
    char job_error[512];

    int64_t hits, misses;
};

/* The batch of job j into buffer `slot`, then the ready hook. */
static cx_status build(const cx_prefetch *p, const cx_batch_job *j, int slot) {
    float *x = p->x[slot], *y = p->y[slot];
    if (p->claim)
        CX_TRY(p->claim(p->ready_ctx, slot));
    CX_TRY(cx_augment_batch(j->images, j->masks, j->n_images, j->height, j->width, j->rows,
                            j->batch, j->seed, j->epoch, j->augment, &j->augment_config, x, y));
    size_t n_y = (size_t)j->batch * (size_t)j->height * (size_t)j->width;
    return p->ready ? p->ready(p->ready_ctx, slot, x, 3 * n_y, y, n_y) : CX_OK;
}

static void *worker_main(void *arg) {
    cx_prefetch *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->quit && !(p->asked && !p->finished))
            pthread_cond_wait(&p->wake, &p->lock);
        if (p->quit)
            break;
        cx_batch_job job = p->job;
        int slot = p->job_slot;
        pthread_mutex_unlock(&p->lock);
        cx_status st = build(p, &job, slot);
        pthread_mutex_lock(&p->lock);
        p->job_status = st;
        if (st != CX_OK) /* the message is this thread's: keep it for the take */
            snprintf(p->job_error, sizeof p->job_error, "%s", cx_last_error());
        p->finished = 1;
        pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Under lock: waits until the worker has finished the job it holds, if any. */
static void wait_finished(cx_prefetch *p) {
    while (p->asked && !p->finished)
        pthread_cond_wait(&p->done, &p->lock);
}

static int same_job(const cx_batch_job *a, const cx_batch_job *b) {
    return a->images == b->images && a->masks == b->masks && a->n_images == b->n_images &&
           a->height == b->height && a->width == b->width && a->rows == b->rows &&
           a->batch == b->batch && a->seed == b->seed && a->epoch == b->epoch &&
           a->augment == b->augment &&
           memcmp(&a->augment_config, &b->augment_config, sizeof a->augment_config) == 0;
}

static void free_buffers(cx_prefetch *p) {
    for (int i = 0; i < 2; i++) {
        if (p->release) {
            p->release(p->be, p->x[i]);
            p->release(p->be, p->y[i]);
        } else {
            cx_aligned_free(p->x[i]);
            cx_aligned_free(p->y[i]);
        }
    }
}

cx_status cx_prefetch_create(size_t x_floats, size_t y_floats, cx_host_alloc_fn alloc,
                             cx_host_free_fn release, cx_backend *be, cx_batch_ready_fn ready,
                             void *ready_ctx, cx_prefetch **out) {
    *out = NULL;
    if ((alloc == NULL) != (release == NULL))
        return cx_fail(CX_EINVAL, "prefetch: host_alloc and host_free come together");
    cx_prefetch *p = calloc(1, sizeof *p);
    if (!p)
        return cx_fail(CX_ENOMEM, "out of memory for the batch prefetch");
    p->x_floats = x_floats;
    p->y_floats = y_floats;
    p->release = release;
    p->be = be;
    p->ready = ready;
    p->ready_ctx = ready_ctx;
    int ok = 1;
    for (int i = 0; i < 2; i++) {
        size_t xb = x_floats * sizeof(float), yb = y_floats * sizeof(float);
        p->x[i] = alloc ? alloc(be, xb) : cx_aligned_alloc(xb);
        p->y[i] = alloc ? alloc(be, yb) : cx_aligned_alloc(yb);
        ok = ok && p->x[i] && p->y[i];
    }
    if (!ok) {
        free_buffers(p);
        free(p);
        if (alloc) /* host_alloc reported its own error: say what it was for, before it */
            return cx_fail_context(CX_ENOMEM, "no pinned host memory for two batch buffers of "
                                   "%zu floats: ", x_floats + y_floats);
        return cx_fail(CX_ENOMEM, "no host memory for two batch buffers of %zu floats",
                       x_floats + y_floats);
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    if (pthread_create(&p->thread, NULL, worker_main, p) != 0) {
        cx_prefetch_free(p);
        return cx_fail(CX_ERUNTIME, "could not start the batch prefetch thread");
    }
    p->started = 1;
    *out = p;
    return CX_OK;
}

void cx_prefetch_free(cx_prefetch *p) {
    if (!p)
        return;
    if (p->started) {
        pthread_mutex_lock(&p->lock);
        wait_finished(p);
        p->quit = 1;
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
        pthread_join(p->thread, NULL);
    }
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free_buffers(p);
    free(p);
}

static int fits(const cx_prefetch *p, const cx_batch_job *job) {
    size_t plane = (size_t)job->height * (size_t)job->width;
    return job->batch >= 1 && (size_t)job->batch * 3 * plane <= p->x_floats &&
           (size_t)job->batch * plane <= p->y_floats;
}

cx_status cx_prefetch_take(cx_prefetch *p, const cx_batch_job *job, const float **x,
                           const float **y, int *slot_out) {
    if (!fits(p, job))
        return cx_fail(CX_EINVAL, "prefetch: a batch of %lld images of %dx%d does not fit "
                       "buffers of %zu floats", (long long)job->batch, job->height, job->width,
                       p->x_floats);
    pthread_mutex_lock(&p->lock);
    int hit = p->asked && same_job(&p->job, job);
    wait_finished(p); /* a stale job too: it writes a buffer this take may use */
    cx_status st = hit ? p->job_status : CX_OK;
    char error[sizeof p->job_error];
    if (hit && st != CX_OK)
        memcpy(error, p->job_error, sizeof error);
    int slot = hit ? p->job_slot : 1 - p->handed;
    p->asked = p->finished = 0;
    pthread_mutex_unlock(&p->lock);
    if (hit && st != CX_OK)
        return cx_fail(st, "%s", error);
    if (!hit)
        CX_TRY(build(p, job, slot));
    p->hits += hit;
    p->misses += !hit;
    p->handed = slot;
    *x = p->x[slot];
    *y = p->y[slot];
    *slot_out = slot;
    return CX_OK;
}

void cx_prefetch_settle(cx_prefetch *p) {
    pthread_mutex_lock(&p->lock);
    wait_finished(p);
    pthread_mutex_unlock(&p->lock);
}

void cx_prefetch_drop(cx_prefetch *p) {
    pthread_mutex_lock(&p->lock);
    wait_finished(p);
    p->asked = p->finished = 0;
    pthread_mutex_unlock(&p->lock);
}

void cx_prefetch_ask(cx_prefetch *p, const cx_batch_job *next) {
    if (!fits(p, next))
        return;
    pthread_mutex_lock(&p->lock);
    wait_finished(p);
    p->job = *next;
    p->job_slot = 1 - p->handed;
    p->job_status = CX_OK;
    p->asked = 1;
    p->finished = 0;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
}

void cx_prefetch_counts(const cx_prefetch *p, int64_t *hits, int64_t *misses) {
    *hits = p->hits;
    *misses = p->misses;
}

void cx_prefetch_on_claim(cx_prefetch *p, cx_batch_claim_fn claim) { p->claim = claim; }
