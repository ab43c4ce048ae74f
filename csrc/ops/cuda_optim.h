/* The optimizer step on the device: the C ABI of kernels/optim.cu (kernels in
 * kernels/device/optim.cuh), for a trainer that keeps parameters, gradients, AdamW moments,
 * step counts and the EMA in device memory. One call does what the CPU trainer's step does
 * after the backward (csrc/train/trainer.c, step_body; csrc/train/optim.h):
 *
 *   norm = global gradient norm over the trained parameters     (cx_clip_grad_norm)
 *   if norm is finite:
 *       grads of trained parameters scaled by the clip factor   (read, not written back)
 *       AdamW on the trained parameters, steps[i] += 1          (cx_adamw_step)
 *       EMA of every parameter from the new values             (cx_ema_update)
 *   else: nothing changes (the trainer stops the run: gradient overflow)
 *
 * with the CPU's float32 arithmetic (bit-identical on the CUDA emulator; see
 * docs/emulator.md, "The optimizer step on the device", for what differs on a GPU).
 * The decision on a non-finite norm is taken on the device: the host reads the outcome
 * (cu_optim_read_result) once the step is queued, with no sync in between.
 *
 * Plain C, no CUDA types (a stream is passed as void *, a cudaStream_t); every pointer in
 * cu_optim_buffers and the mask are device pointers. Functions return a cudaError_t value
 * (0: cudaSuccess; cudaErrorInvalidValue, 1, for a bad argument). Nothing allocates: the
 * caller gives a workspace of cu_optim_workspace_bytes() bytes.
 *
 * Not exported by name: libcodext_cuda.so exports cx_cuda_get_api alone; the table it
 * returns (ops/cuda_abi.h, ABI 3) wraps these for a backend's stream (optim_*), and the
 * device trainer (csrc/train/device_step.c) calls them through it. */
#ifndef CX_OPS_CUDA_OPTIM_H
#define CX_OPS_CUDA_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One parameter tensor, the device copy of a cx_param_table entry (model/params.h):
 * entries in buffer order, without overlap, inside `total` floats (cx_optim_check_table),
 * group 0 or 1. */
typedef struct {
    uint64_t offset, numel; /* floats */
    int32_t group;          /* 0 backbone, 1 head (CX_GROUP_*): which lr */
    int32_t decay;          /* 1: weight decay applies */
} cu_optim_param;

typedef struct {
    int count;                    /* parameter tensors */
    size_t total;                 /* floats in each buffer below */
    const cu_optim_param *params; /* [count] */
    float *values, *exp_avg, *exp_avg_sq, *ema; /* [total] */
    const float *grads;           /* [total]: the accumulated gradients, left as they are */
    int64_t *steps;               /* [count]: AdamW step count per parameter (optim.c's) */
    void *workspace;              /* cu_optim_workspace_bytes(count, total) bytes */
} cu_optim_buffers;

typedef struct {
    double lr[2];               /* this step's lr per group (backbone, head) */
    double weight_decay;        /* for parameters with decay = 1 */
    double beta1, beta2, eps;   /* in [0, 1), [0, 1), > 0 */
    double max_norm;            /* grad_clip; <= 0: the norm is measured, nothing clipped */
    double ema_decay;           /* d of this step: cx_ema_decay_at(decay, ema_updates) */
} cu_optim_config;

/* What a step found, read back by cu_optim_read_result. */
typedef struct {
    double norm;       /* global norm before clipping (inf or NaN: overflow) */
    float clip_scale;  /* the factor the gradients were multiplied by (1: no clipping) */
    int applied;       /* 1: the step was applied; 0: non-finite norm, nothing changed */
} cu_optim_result;

/* Bytes of device workspace for a table of `count` parameters over `total` floats. */
size_t cu_optim_workspace_bytes(int count, size_t total);

/* One optimizer step (three kernels on `stream`). mask [count] (device; NULL: every
 * parameter): nonzero = trained this step (the stage mask, less sparse-MoE experts no
 * image chose). A masked-out parameter keeps its value, moments and step count, its
 * gradient does not enter the norm (NaN there is ignored), and its EMA is updated. */
int cu_optim_step(const cu_optim_buffers *buffers, const unsigned char *mask,
                  const cu_optim_config *config, void *stream);

/* A fresh optimizer at a stage's start (cx_adamw_reset): zeroes exp_avg, exp_avg_sq
 * (padding included) and the step counts, on `stream`. */
int cu_optim_reset(const cu_optim_buffers *buffers, void *stream);

/* Copies the last step's outcome to the host; waits for `stream`. */
int cu_optim_read_result(const cu_optim_buffers *buffers, cu_optim_result *out, void *stream);

#ifdef __cplusplus
}
#endif
#endif
