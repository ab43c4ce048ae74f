/* The trainer's data path: the next micro-batch is augmented on a worker thread while the
 * current one trains (issue 10, "the data path").
 *
 * Two batch buffers: the one the last take handed out (the step trains on it) and the one
 * the worker fills. On a CUDA device they are pinned host memory (cuda_abi.h host_alloc),
 * so the forward's upload is a direct DMA copy that need not be staged. A take for the
 * batch the worker was asked for waits for it (about zero when augmenting is faster than a
 * step); any other batch (the first of a run_epoch call after an out-of-memory halving
 * changed the micro-batch, or a call on other arrays) is built on the calling thread, and
 * a stale job is finished and dropped first. The time a take takes (waiting for the
 * worker, or building) is the step's data wait, which the trainer times and sums.
 *
 * The batch is a pure function of the job (cx_augment_batch: seed, epoch and row keys),
 * so prefetching changes no bit of any run. */
#ifndef CX_TRAIN_PREFETCH_H
#define CX_TRAIN_PREFETCH_H

#include "../data/data.h"
#include "../ops/ops.h"

/* One micro-batch as cx_augment_batch builds it; two jobs are the same batch when every
 * field is equal (rows is compared by address: the trainer's permutation, fixed for an
 * epoch, so epoch is compared too). */
typedef struct {
    const uint8_t *images, *masks; /* [n_images, height, width, 3], [n_images, height, width] */
    int64_t n_images;
    int height, width;
    const int64_t *rows; /* [batch] rows of images and masks */
    int64_t batch;
    uint64_t seed, epoch;
    int augment;
    cx_augment_config augment_config;
} cx_batch_job;

typedef struct cx_prefetch cx_prefetch;

/* Host memory for the two buffers: pinned through a CUDA backend's library table, or
 * cx_aligned_alloc when alloc is NULL. */
typedef void *(*cx_host_alloc_fn)(cx_backend *be, size_t bytes);
typedef void (*cx_host_free_fn)(cx_backend *be, void *ptr);

/* Called once a batch is built into buffer `slot` (x: n_x floats, y: n_y), on the thread
 * that built it (the worker, or a take that built it itself): the CUDA trainer queues its
 * copy to the device there, on the copy stream. An error fails that batch's take. */
typedef cx_status (*cx_batch_ready_fn)(void *ctx, int slot, const float *x, size_t n_x,
                                       const float *y, size_t n_y);

/* Called on the thread about to build into buffer `slot`, before it writes there (may be
 * NULL): the CUDA trainer waits there for the copy stream's last upload from that pinned
 * buffer. An error fails that batch's take. */
typedef cx_status (*cx_batch_claim_fn)(void *ctx, int slot);

/* Two buffers of x_floats ([B, 3, H, W]) and y_floats ([B, 1, H, W]) and the worker
 * thread; ready (may be NULL) with ready_ctx, as above. The allocations happen here, never
 * in a step. */
cx_status cx_prefetch_create(size_t x_floats, size_t y_floats, cx_host_alloc_fn alloc,
                             cx_host_free_fn release, cx_backend *be, cx_batch_ready_fn ready,
                             void *ready_ctx, cx_prefetch **out);
/* Sets the claim hook (ctx: ready_ctx) before the first take. */
void cx_prefetch_on_claim(cx_prefetch *p, cx_batch_claim_fn claim);
/* Finishes the worker's job, stops the thread, frees the buffers; NULL is fine. */
void cx_prefetch_free(cx_prefetch *p);

/* The batch of `job` into *x, *y and its buffer into *slot (valid until the ask that follows
 * the next take; the batch must fit the buffers), waiting for the worker or building it
 * here (the caller times this: its data wait). An error of the worker's augmentation is reported here, with its
 * message. */
cx_status cx_prefetch_take(cx_prefetch *p, const cx_batch_job *job, const float **x,
                           const float **y, int *slot);
/* Starts building `next` on the worker, into the buffer the last take did not hand out.
 * A job still running is finished first (and dropped). A batch that does not fit the
 * buffers is not asked for (its take will say why). */
void cx_prefetch_ask(cx_prefetch *p, const cx_batch_job *next);

/* Waits until the worker has finished the job it holds (kept for a take): before the
 * memory a job reads (the permutation) is rewritten. */
void cx_prefetch_settle(cx_prefetch *p);
/* The same, and forgets the job: before the arrays a job reads may be freed. */
void cx_prefetch_drop(cx_prefetch *p);

/* Jobs the worker built and a take used, and takes that built their batch themselves
 * (tests and the log: a warm prefetch has one miss per run_epoch call at most). */
void cx_prefetch_counts(const cx_prefetch *p, int64_t *hits, int64_t *misses);

#endif
