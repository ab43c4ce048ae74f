/* Gradient buckets averaged over the ranks while backward still runs (issues 9 and 10).
 *
 * A data-parallel step averages the trained span of the gradient buffer, [begin, end), in
 * buckets of at most bucket_floats taken from the end (backward produces the last
 * parameters first: decoder, necks 3..0, backbone stages 3..0). During the step's last
 * micro-batch the model's backward tells, through cx_cod_set_grads_final, from which
 * offset on the gradients are final; a communication thread then averages every bucket
 * lying wholly above that offset, while the main thread goes on with the backward. When
 * the backward is done, cx_buckets_finish releases the rest and waits for the thread.
 *
 * The buckets, their boundaries and their order are those of the reduction after the
 * backward, on every rank, so the averaged gradients are the same bits either way; a
 * rank whose step failed (out of memory) joins with the same sequence from finish.
 *
 * Two kinds of memory:
 *   - host gradients (the CPU trainer) over any communicator;
 *   - device gradients over a communicator that takes device memory (NCCL): each release
 *     comes with a stream mark recorded on the backend's stream at that point, and the
 *     thread waits for the mark before handing the bucket to NCCL (its own stream).
 * Device gradients over a host-memory communicator (staged through host buffers on the
 * backend's stream) are not overlapped: the trainer reduces those after the backward. */
#ifndef CX_TRAIN_BUCKETS_H
#define CX_TRAIN_BUCKETS_H

#include "../dist/comm.h"
#include "../ops/cuda_abi.h"

typedef struct cx_buckets cx_buckets;

typedef struct {
    cx_comm *comm;            /* not owned; used only by the thread between begin and finish */
    float *grads;             /* the model's gradient buffer (host, or device memory) */
    size_t bucket_floats;
    cx_backend *be;           /* device gradients: the model's CUDA backend; NULL on the host */
    const cx_cuda_api *api;   /* device gradients: the library's table (stream marks) */
} cx_buckets_config;

/* Starts the communication thread. Not in a step: it allocates. */
cx_status cx_buckets_create(const cx_buckets_config *config, cx_buckets **out);
/* Stops and joins the thread (finish first); NULL is fine. */
void cx_buckets_free(cx_buckets *b);

/* A step's reduction of grads [begin, end): nothing is released yet. */
void cx_buckets_begin(cx_buckets *b, size_t begin, size_t end);
/* The gradients at offsets >= offset are final (a cx_grads_final_fn for the model's hook,
 * ctx = the cx_buckets). Device gradients: records a stream mark for the thread. */
void cx_buckets_grads_final(void *ctx, size_t offset);
/* Releases what is left (after begin), waits until every bucket is averaged, and returns
 * the first error (with its message). */
cx_status cx_buckets_finish(cx_buckets *b);

/* How many of the last finished step's buckets the backward released (the thread could
 * average them while the backward ran; how many it did is a matter of timing; the time
 * the step waited is the trainer's comm_seconds). */
int64_t cx_buckets_early(const cx_buckets *b);

#endif
