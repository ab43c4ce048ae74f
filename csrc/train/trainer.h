/* The single-process C trainer: runs whole epochs of the recipe of docs/training.md on
 * a COD model (csrc/model/cod.h) with no Python in the step loop.
 *
 * One optimizer step (global step t, the twin's Trainer.step, tools/cod_twin.py):
 *   at = lr plan at t; on a stage's first step: fresh AdamW (moments and step counts 0)
 *   zero grads
 *   for each of A = accumulation_steps micro-batches of B = batch_size images:
 *       build the batch (training: cx_augment_batch from the uint8 arrays, rows taken in
 *       order from the epoch's permutation), forward, loss (checked finite),
 *       backward of loss / A (stage 1: no backward through the backbone at all)
 *       forward mode (cx_cod_train_mode): stage 1 CX_COD_TRAIN_HEAD (the backbone keeps no
 *       activation), stage 2 CX_COD_TRAIN or, with gradient_checkpointing,
 *       CX_COD_TRAIN_CHECKPOINT; the arena is planned again when the mode changes
 *   global gradient norm over the trained parameters (checked finite), clip to grad_clip
 *   AdamW with the stage's per-group lrs on the trained parameters
 *   EMA update of every parameter (t counted over the whole run)
 * The reported step loss is the mean of the micro-batch losses.
 *
 * Trained parameters (the optimizer mask): stage 1 the neck and decoder, stage 2 all; in
 * sparse-MoE mode an expert that no image of any micro-batch of the step was routed to is
 * also left out (torch leaves its .grad None: no decay, no moment update, no step count).
 *
 * Epochs: epoch e visits the training rows in the order of a permutation drawn with the
 * counter RNG from (seed, e) (Fisher-Yates; cx_trainer_permutation), in steps_per_epoch
 * = floor(n_train / (B A)) global batches; the last incomplete global batch is dropped.
 * Micro-batch m of step s takes permutation entries [(s A + m) B, (s A + m + 1) B), so a
 * step sees the same images whatever the split between B and A. Sample i of epoch e is
 * augmented with the key (seed, e, i).
 *
 * Data parallelism (docs/distributed.md): with world_size W ranks, one global step
 * takes W A B permutation entries; rank r, micro-batch m reads entries
 * [s W A B + (r A + m) B, ... + B): each rank a disjoint contiguous shard of the step's block,
 * so W ranks with batch B equal one rank with batch W B (or B and W A accumulation steps).
 * steps_per_epoch = floor(n_train / (W A B)): the entries past the last full block of each
 * epoch's permutation are not visited that epoch (the permutation changes every epoch).
 * After the micro-batches, the gradients are averaged over the ranks (cx_comm all-reduce
 * in buckets over contiguous slices of the gradient buffer, the last parameters first as
 * backward produces them), so every rank clips, steps and checks overflow on the same
 * numbers; in sparse-MoE mode the experts routed to are also united over the ranks.
 * Any error on a rank aborts the communicator, so the other ranks fail at once.
 *
 * Determinism: every piece (ops, augmentation, optimizer) gives results independent of the
 * thread count, and the whole run position lives in cx_train_state (plus the weights), so
 * a run saved after an epoch and resumed is bit-identical to an uninterrupted one.
 *
 * On a CUDA device (the model's backend is CUDA; device_step.h): the same loop, with the
 * AdamW moments, EMA and step counts in device memory (state's buffers are NULL) and the
 * step's tail on the device, decided there; one read-back of its outcome per step. The
 * state reaches the host only through cx_trainer_host_state / cx_trainer_install_state.
 * Data parallelism on a device: the communicator's buffers are host memory, so the join
 * and each gradient bucket go through a host staging buffer (cx_device_step_join,
 * cx_device_step_all_reduce_mean): the same numbers as the CPU trainer's ranks.
 *
 * Errors: a loss or gradient that is not finite stops the run BEFORE the optimizer step,
 * with CX_ERUNTIME naming the global step, epoch, micro-batch and which loss part or the
 * first parameter whose gradient (or weight) is not finite; the weights and state are those
 * after the last completed step. */
#ifndef CX_TRAIN_TRAINER_H
#define CX_TRAIN_TRAINER_H

#include "../data/data.h"
#include "../dist/comm.h"
#include "../model/cod.h"
#include "buckets.h"
#include "device_step.h"
#include "optim.h"
#include "prefetch.h"
#include "train_state.h"

/* Upper bounds of the configuration (codext/config.py has the same ones): every size and
 * count below stays far inside int64 / size_t arithmetic, and products of them are
 * computed with overflow checks anyway. */
#define CX_TRAINER_MAX_EPOCHS 100000
#define CX_TRAINER_MAX_BATCH 4096
#define CX_TRAINER_MAX_ACCUMULATION 1024
#define CX_TRAINER_MAX_SIDE 8192
#define CX_TRAINER_MAX_ROWS ((int64_t)1 << 40)

typedef struct {
    int batch_size;         /* B: images per micro-batch (1..CX_TRAINER_MAX_BATCH) */
    int accumulation_steps; /* A (1..CX_TRAINER_MAX_ACCUMULATION) */
    int64_t epochs;         /* 1..CX_TRAINER_MAX_EPOCHS */
    int64_t stage1_epochs;  /* 0..epochs: backbone frozen */
    cx_schedule_kind scheduler;
    double lr, stage2_lr, backbone_lr_mult; /* stage 1 head lr; stage 2 head, backbone x */
    double warmup_epochs, min_lr;           /* cosine: warmup steps = floor(warmup x spe);
                                               warmup in [0, CX_TRAINER_MAX_EPOCHS] */
    double weight_decay, beta1, beta2, eps;
    double grad_clip;       /* global norm; <= 0: no clipping (the norm is still checked) */
    double ema_decay;       /* d_t = min(ema_decay, (1 + t) / (10 + t)) */
    uint64_t seed;          /* shuffling and augmentation */
    int augment;            /* 1: cx_augment_batch with `augment_config`; 0: normalise only */
    cx_augment_config augment_config;
    int world_size, rank;   /* data parallelism: W ranks (0 or 1: one process), this rank */
    /* Dynamic loss scaling (the fp16 path's; retry.c): backward runs on loss x scale, the
     * gradients are divided by it again; a non-finite gradient norm halves the scale and
     * the step runs again on the same batch; growth_interval finite steps in a row double
     * it. Powers of two only, so on fp32 the scaling is exact. 0: scale 1, no retries. */
    int loss_scaling;
    double loss_scale_init;          /* a power of two in [1, 2^24] (GradScaler's: 2^16) */
    int64_t loss_scale_growth_interval; /* >= 1 (GradScaler's: 2000) */
    int gradient_checkpointing; /* 1: stage-2 forwards keep only the backbone's stage inputs
                                   and features; backward recomputes each stage (the same
                                   bits, less activation memory, one more backbone forward) */
    int prefetch;           /* run_epoch builds the next micro-batch on a worker thread while
                               the current one trains (prefetch.h): 1 on, 0 off, -1 (auto) on
                               for a CUDA model (pinned buffers), off on the CPU, whose
                               threads the step's ops already keep busy */
    int overlap_comm;       /* data parallelism: 1 (default from Python) averages gradient
                               buckets on a communication thread while the last micro-batch's
                               backward runs (buckets.h), 0 after it; the same bits either way */
    int64_t bucket_floats;  /* gradient bucket size in floats (0: CX_DDP_BUCKET_FLOATS) */
} cx_trainer_config;

#define CX_DDP_BUCKET_FLOATS ((int64_t)1 << 20) /* 4 MiB of float32 per bucket */

/* A fault tests inject (Trainer.inject_oom, Trainer.inject_overflow): it fires in `times`
 * attempts of global step `step` (step -1: none). */
typedef struct {
    int64_t step, times;
} cx_trainer_fault;

/* What the last optimizer step did. */
typedef struct {
    double loss;            /* mean over micro-batches of the total loss */
    double lr[CX_OPTIM_GROUPS];
    double grad_norm;       /* before clipping */
    double ema_decay;       /* d used by the EMA update */
    int stage;
} cx_trainer_step_info;

typedef struct {
    cx_cod_model *model;    /* not owned */
    cx_trainer_config cfg;
    /* A model on a CUDA backend: the moments, EMA and step counts live in device memory
     * (device_step.h) and state's buffers are NULL; NULL on the CPU. */
    cx_device_step *dev;
    int64_t n_train;        /* training rows the epochs draw from */
    int height, width;      /* image size of the data and of every batch */
    int64_t steps_per_epoch, total_steps;
    cx_lr_plan plan;
    cx_train_state state;   /* run position, moments, step counts, EMA */
    unsigned char *mask;    /* [table.count] parameters this step trains */
    int *expert_of;         /* [table.count] scale * CX_COD_MAX_EXPERTS + expert, or -1 */
    unsigned char used[4][CX_COD_MAX_EXPERTS]; /* sparse: experts routed to in this step */
    int64_t *perm;          /* [n_train] the current epoch's order */
    int64_t perm_epoch;     /* epoch `perm` belongs to (-1: none) */
    float *x, *y;           /* one micro-batch: [B, 3, H, W], [B, 1, H, W] (no prefetch) */
    cx_prefetch *prefetch;  /* the batch worker (cfg.prefetch), else NULL */
    float *batch_dev_x[2], *batch_dev_y[2]; /* CUDA + prefetch: the device copies of the
                                               prefetch's two buffers (copy stream) */
    double data_wait_seconds; /* run_epoch's steps waiting for their batches (the worker, or
                                 building them): about zero when prefetching keeps up */
    cx_trainer_step_info last;
    /* Asked between optimizer steps of run_epoch (may be NULL): nonzero stops the epoch
     * there (CX_ERUNTIME "interrupted"); the state is that of a step boundary, and the
     * next run_epoch continues from it. The Python binding checks for Ctrl-C here. */
    int (*interrupted)(void *ctx);
    void *interrupt_ctx;
    cx_comm *comm;          /* not owned; NULL: one process (world_size 1) */
    /* Out of memory in a step: a micro-batch whose forward or backward fails with
     * CX_ENOMEM (on any rank: the count travels with the loss's all-reduce) discards the
     * step on every rank; the micro-batch is halved and accumulation doubled (the global
     * batch and the arithmetic stay: micro-batch m of A covers the same rows as micro-
     * batches 2m and 2m+1 of 2A) and the step runs again. cfg.batch_size and
     * cfg.accumulation_steps hold the current split. */
    cx_trainer_fault oom_fault; /* tests: the step's first micro-batch reports CX_ENOMEM */
    int64_t oom_halvings;    /* times the micro-batch was halved */
    int64_t oom_last_step;   /* global step of the latest halving (-1: none) */
    int oom_last_ranks;      /* how many ranks reported it */
    int step_retry;          /* step_body: the step was discarded, run it again */
    /* A device step waits for the GPU twice: once for the losses of all its micro-batches
     * (read back into loss_records and checked before the optimizer runs; in DDP before
     * the last backward, which starts the gradient buckets, and that backward waits too)
     * and once for the optimizer's result. Every pass is queued without a wait (cod.h
     * cx_cod_forward_queued). 1 (CODEXT_CUDA_SYNC=pass): wait after every pass and check
     * each loss before its backward, as on the CPU, so that a fault the device meets names
     * its pass (debugging). */
    int wait_each_pass;
    float *loss_records;     /* device: [B A] x cx_cod_loss_record_floats(1), pinned (the
                                micro-batch split changes, B A does not) */
    double *micro_balance;   /* [B A] the routing balance of each micro-batch's forward */
    int batch_slot;          /* the device batch buffer the last take handed out */
    cx_trainer_fault overflow_fault; /* tests: the step's gradients get an infinity */
    int64_t overflow_retries;     /* steps run again after a loss-scale back-off */
    double comm_seconds;     /* wall time the steps waited for their collectives after the
                                backward (the slowest rank included; what the overlap did not
                                hide), for bench/ddp_threads.py */
    cx_buckets *buckets;     /* the communication thread (cfg.overlap_comm), else NULL */
    int buckets_begun;       /* this step's buckets have begun (the last backward started) */
    int64_t overlapped_buckets; /* buckets the last backwards released to the thread */
} cx_trainer;

/* Validates cfg against the model and data size, computes the plan (steps_per_epoch =
 * floor(n_train / (B A)) >= 1 or CX_EINVAL), classifies the model's parameters
 * (cx_optim_classify), allocates everything the loop needs and starts the EMA from the
 * model's current weights. height, width: the training images' size (the batches'). */
cx_status cx_trainer_create(cx_cod_model *model, const cx_trainer_config *cfg,
                            int64_t n_train, int height, int width, cx_trainer **out);
void cx_trainer_free(cx_trainer *t);

/* Whether a loaded training state `s` is a position this trainer's run can be at, and
 * holds what a run at that position holds: step = epoch x steps_per_epoch + epoch_step
 * within the run, one EMA update per step, stage and stage_step those of the plan at that
 * step, and the per-parameter AdamW step counts of that stage (stage 1: backbone 0, the
 * rest stage_step; stage 2: every parameter stage_step; sparse MoE: an expert's count may
 * be lower, never higher). CX_EINVAL naming `path` and the first disagreement. */
cx_status cx_trainer_check_state(const cx_trainer *t, const cx_train_state *s, const char *path);

/* Joins the ranks of a data-parallel run (cfg.world_size > 1; comm->world and comm->rank
 * must equal cfg.world_size and cfg.rank): broadcasts rank 0's weights to every rank and
 * checks that they arrived equal; at step 0 the EMA restarts from them. Call it before the
 * first step (after loading a state to resume). comm stays owned by the caller and must
 * outlive the trainer's use of it. */
cx_status cx_trainer_set_comm(cx_trainer *t, cx_comm *comm);

/* Runs the rest of the current epoch (state.epoch, from state.epoch_step) on the training
 * arrays, or at most max_steps steps of it (max_steps < 0: no limit).
 *   images [n_images, H, W, 3] uint8, masks [n_images, H, W] uint8 (0/255);
 *   n_images == n_train, (H, W) == the trainer's size.
 *   step_loss, step_lr [steps_per_epoch] (may be NULL): the loss and head lr of epoch step
 *   s are written at index s.
 * *n_done gets the steps run. When the epoch completes, state.epoch advances and
 * state.epoch_step returns to 0. CX_EINVAL when every epoch is done. */
cx_status cx_trainer_run_epoch(cx_trainer *t, const uint8_t *images, const uint8_t *masks,
                               int64_t n_images, int height, int width, double *step_loss,
                               double *step_lr, int64_t max_steps, int64_t *n_done);

/* One optimizer step (the next global step of the plan) on given float batches:
 *   x [A B, 3, H, W] (normalised), y [A B, 1, H, W] in {0, 1}; micro-batch m is rows
 *   [m B, (m + 1) B). Used by run_epoch and by tests on a fixed batch. Advances
 *   state.step (not the epoch position). */
cx_status cx_trainer_step(cx_trainer *t, const float *x, const float *y, int height, int width);

/* ---- the data-parallel part of a step (ddp_step.c) ------------------------------------ */
/* Before the step's last backward: starts the buckets and hooks them to the backward. */
void cx_trainer_ddp_backward_begins(cx_trainer *t);
/* After it: unhooks. */
void cx_trainer_ddp_backward_ends(cx_trainer *t);
/* A step failed with `failure` (the communicator is aborted): unhooks, waits for the
 * thread, and returns `failure` with its message kept. */
cx_status cx_trainer_ddp_step_failed(cx_trainer *t, cx_status failure);
/* Averages the gradients (the rest of the buckets), the sparse expert flags and the loss
 * with the out-of-memory count over the ranks. */
cx_status cx_trainer_ddp_reduce(cx_trainer *t, int sparse, double *loss_sum, int *oom_ranks);

/* ---- the training state on the host (device_step.c) ---------------------------------- */
/* The state in host memory, for saving and for Python: `host` was allocated for the model's
 * table with cx_train_state_alloc; it gets the run position and scalars and a copy of the
 * moments, EMA and step counts (downloaded from the device on a device trainer). */
cx_status cx_trainer_host_state(const cx_trainer *t, cx_train_state *host);
/* Makes a loaded host state (checked with cx_trainer_check_state) the trainer's: a CPU
 * trainer swaps buffers with it (*loaded then holds the old ones, for
 * cx_train_state_free), a device trainer uploads it (loaded keeps its buffers). */
cx_status cx_trainer_install_state(cx_trainer *t, cx_train_state *loaded);

/* ---- why a step stopped (trainer_errors.c) -------------------------------------------- */
/* CX_OK when the loss parts of micro-batch `micro` just computed are finite, else
 * CX_ERUNTIME naming the step, the micro-batch and each part that is not. */
cx_status cx_trainer_check_loss(const cx_trainer *t, const cx_cod_loss_parts *parts, int stage,
                                int micro);
/* CX_ERUNTIME for a gradient norm `norm` that is not finite: names the trained parameter
 * nearest the loss whose gradient is not finite, and notes weights that are not. */
cx_status cx_trainer_gradient_overflow(const cx_trainer *t, double norm, int stage);

/* ---- a step that runs again (retry.c) ----------------------------------------------- */
/* Every rank agreed that `ranks` of them ran out of memory in this step: halves the
 * micro-batch and doubles accumulation and sets step_retry, or fails (CX_ENOMEM) when the
 * micro-batch cannot be halved (one image, an odd count, accumulation at its limit). */
cx_status cx_trainer_halve_micro_batch(cx_trainer *t, int ranks);
/* Under loss scaling, after a non-finite gradient norm: halves the scale, sets step_retry
 * and returns 1; 0 without loss scaling or once the scale is at its floor (2^-24). */
int cx_trainer_back_off_scale(cx_trainer *t);
/* Under loss scaling, after a finite step: counts it, doubling the scale (up to 2^24)
 * after growth_interval of them in a row. */
void cx_trainer_grow_scale(cx_trainer *t);
/* tests: puts an infinity into the first trained gradient when overflow_fault fires. */
void cx_trainer_inject_overflow(cx_trainer *t);
/* Whether fault `f` fires in this attempt of global step `step` (counting the attempt). */
int cx_trainer_fault_fires(cx_trainer_fault *f, int64_t step);

/* The permutation of epoch `epoch` of n rows (Fisher-Yates with cx_rng_u64 keyed by
 * (seed, epoch)). perm [n]. */
void cx_trainer_permutation(uint64_t seed, uint64_t epoch, int64_t n, int64_t *perm);

#endif
