/* The trainer's optimizer state and step tail on a CUDA backend (issue 10).
 *
 * When the model's backend is CUDA (its parameters and gradients are device memory), the
 * trainer keeps the AdamW moments, the EMA and the per-parameter step counts in device
 * memory too, allocated through the backend, and runs the tail of each step (loss-scale
 * removal, global norm, clipping, AdamW, EMA) on the device: the backend's `affine` op for
 * the loss scale, then the fused optimizer of kernels/optim.cu (ops/cuda_optim.h) through
 * the CUDA library's table (ops/cuda_abi.h, optim_*). Nothing is read back in between:
 * the decision "the norm is finite, apply the step" is taken on the device, and the host
 * learns it from the step's one read-back (norm, clip factor, applied: 16 bytes), which is
 * also the step's one wait for the optimizer's queue.
 *
 * The arithmetic is the CPU trainer's (csrc/train/clip.c, optim.c, ema.c), float32 op for
 * op; the norm is summed in another order (agrees to ~1e-12 relative): docs/emulator.md,
 * "The optimizer step on the device". Host memory holds only the run position and the
 * scalars (cx_train_state's buffers stay NULL); a state is saved and loaded through host
 * copies in the same file format as the CPU trainer's (cx_trainer_host_state). */
#ifndef CX_TRAIN_DEVICE_STEP_H
#define CX_TRAIN_DEVICE_STEP_H

#include "../dist/comm.h"
#include "../model/params.h"
#include "../ops/cuda_abi.h"
#include "train_state.h"

typedef struct {
    cx_backend *be;              /* the model's CUDA backend (not owned) */
    const cx_cuda_api *api;      /* the loaded library's table */
    int count;                   /* parameters */
    size_t total;                /* floats per buffer */
    /* device memory, allocated through be */
    float *exp_avg, *exp_avg_sq, *ema; /* [total] */
    int64_t *steps;              /* [count] AdamW step counts */
    cu_optim_param *params;      /* [count] the table's offsets, sizes, groups, decay */
    unsigned char *mask;         /* [count] the optimizer mask of the last step */
    void *workspace;             /* api->optim_workspace_bytes(count, total) */
    /* host */
    unsigned char *mask_host;    /* [count] what `mask` holds (uploaded only on change) */
    int mask_valid;              /* mask_host matches the device copy */
    float *staging;              /* [staging_floats] host copy of one gradient bucket of a
                                    data-parallel step over a host-memory communicator
                                    (cx_device_step_join), else NULL */
    size_t staging_floats;
} cx_device_step;

/* 1 when `be` is a CUDA backend (the model's buffers are device memory). */
int cx_device_step_applies(const cx_backend *be);

/* The device state for `table` (groups and decay flags already classified): moments and
 * step counts zero, the EMA a copy of `params` (device memory of the model). */
cx_status cx_device_step_create(cx_backend *be, const cx_param_table *table, const float *params,
                                cx_device_step **out);
void cx_device_step_free(cx_device_step *d);

/* EMA = params (the shadow's start; device to device). */
cx_status cx_device_step_ema_init(cx_device_step *d, const float *params);

/* A fresh AdamW at a stage's start: moments (padding included) and step counts zero. */
cx_status cx_device_step_reset(cx_device_step *d);

/* The tail of one step on the device, with the CPU trainer's arithmetic:
 *   grads *= unscale when unscale != 1 (loss scaling: 1 / scale, a power of two: exact)
 *   norm over the masked parameters; when finite: clip, AdamW (steps += 1), EMA of every
 *   parameter with config->ema_decay; else nothing changes
 * mask [count] (host): the parameters trained this step. One read-back: *norm (before
 * clipping) and *applied (0: not finite, nothing changed). */
cx_status cx_device_step_run(cx_device_step *d, const unsigned char *mask, float unscale,
                             const cu_optim_config *config, float *params, float *grads,
                             double *norm, int *applied);

/* Host copies: the moments, EMA and step counts into a host state's buffers (allocated for
 * the table with cx_train_state_alloc); and back from one. Each waits for the copies. */
cx_status cx_device_step_download(cx_device_step *d, cx_train_state *host);
cx_status cx_device_step_upload(cx_device_step *d, const cx_train_state *host);

/* Step counts only, to host memory [count] (waits). */
cx_status cx_device_step_download_steps(cx_device_step *d, int64_t *host);

/* Data parallelism on the device, two ways, chosen by the communicator (comm.h):
 *   - one that takes device memory (NCCL: cx_comm_device_buffers): the join broadcasts
 *     the device weights directly and each gradient bucket is averaged in place on the
 *     device (ncclAvg), after the backend's stream has finished the backward: no staging;
 *   - one that takes host memory (shm): the weights travel through a host copy and each
 *     bucket through a host staging buffer (download, all-reduce on the host, upload), so
 *     the numbers each rank steps on are the CPU trainer's.
 *
 * join: (host route only) allocates the staging buffer (bucket_floats, at most the
 * parameter count); replaces `params` (device, [total]) by rank 0's, and writes into *hash
 * an FNV-1a hash of the weights now held, read back to the host (the trainer compares it
 * with rank 0's over the host route). Not in the step: it allocates. */
cx_status cx_device_step_join(cx_device_step *d, cx_comm *comm, float *params,
                              size_t bucket_floats, uint64_t *hash);
/* grads [n] (device memory; host route: n <= the staging size): replaced by the mean over
 * the ranks. */
cx_status cx_device_step_all_reduce_mean(cx_device_step *d, cx_comm *comm, float *grads,
                                         size_t n);

/* FNV-1a over n floats' bytes, continuing from h (start: CX_FNV_OFFSET). */
#define CX_FNV_OFFSET 0xcbf29ce484222325ull
uint64_t cx_fnv1a_floats(uint64_t h, const float *values, size_t n);

/* n floats of backend memory copied into a new host buffer (cx_aligned_alloc; the caller
 * frees it), or NULL with the error set. For error messages and Python's host copies. */
float *cx_backend_host_copy(cx_backend *be, const float *src, size_t n);

#endif
