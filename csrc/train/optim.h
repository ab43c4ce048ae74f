/* Training arithmetic on the one-buffer parameter layout (csrc/model/params.h):
 * AdamW, learning-rate schedules, global-norm clipping, gradient scaling and the EMA.
 *
 * Every function works on flat float buffers that share the layout of the parameter
 * table (values, grads, exp_avg, exp_avg_sq, ema: table->total floats each) and touches
 * only the floats of parameters (the padding between them is left alone). Each is the
 * executable form of the PyTorch twin (tools/cod_twin.py, interpretations 9-14; see
 * tests/data/cod/README.md) and is parallel with results that do not depend on the
 * thread count: elementwise work is split over fixed chunks of the buffer, and the one
 * reduction (the gradient norm) sums fixed chunks in double and adds the partials in
 * chunk order.
 *
 * Which parameters an optimizer step touches is a mask over the table (one byte per
 * parameter, nonzero = update): stage 1 masks out the frozen backbone, and in sparse-MoE
 * mode the trainer may also clear experts that no image chose (torch skips a parameter
 * whose .grad is None: no decay, no moment update, no step count).
 *
 * One optimizer step of the twin's Trainer, in the order the trainer loop calls them:
 *   cx_lr_plan_at(&plan, step, &at);
 *   if (at.stage_begins) { cx_adamw_reset(...); cx_optim_stage_mask(table, at.stage, mask); }
 *   zero grads; for each of A micro-batches: forward, backward of loss / A (accumulates);
 *   cx_clip_grad_norm(table, mask, grads, grad_clip, &norm);   (non-finite norm: overflow)
 *   cfg.lr[g] = at.lr[g]; cx_adamw_step(table, mask, &cfg, steps, values, grads, m, v);
 *   cx_ema_update(table, ema_decay, step, values, ema, &d);
 * (tests/test_optim.py::test_two_stage_recipe_glue_matches_reference runs exactly this.) */
#ifndef CX_TRAIN_OPTIM_H
#define CX_TRAIN_OPTIM_H

#include "../core/cx.h"
#include "../model/params.h"

/* Optimizer groups (cx_param.group). */
#define CX_GROUP_BACKBONE 0
#define CX_GROUP_HEAD 1 /* neck + decoder */
#define CX_OPTIM_GROUPS 2

/* ---- parameter classes ----------------------------------------------------------- */

/* Sets every parameter's group and decay flag from its name and rank, the twin's rule
 * (interpretation 9): group = backbone for names starting "backbone.", else head; no
 * weight decay for ndim <= 1 (biases, norm weights, gammas), names ending in
 * "temperature", and the MoE gate (names containing ".moe.gate."); everything else
 * decays. The trainer calls it once after the model has declared its parameters. */
void cx_optim_classify(cx_param_table *table);
/* The same rule for one name (1 = decays). */
int cx_optim_decays(const char *name, int ndim);

/* mask[i] = 1 for the parameters stage `stage` trains (1: head only, 2: all), else 0.
 * mask has table->count entries. */
void cx_optim_stage_mask(const cx_param_table *table, int stage, unsigned char *mask);

/* Checks that the table's parameters lie in order, without overlap, inside
 * table->total floats, with valid groups; CX_EINVAL naming the first bad one. Every
 * function below assumes a valid table (the model's tables are valid by construction). */
cx_status cx_optim_check_table(const cx_param_table *table);

/* ---- AdamW ----------------------------------------------------------------------- */

typedef struct {
    double lr[CX_OPTIM_GROUPS]; /* this step's learning rate per group (schedule applied) */
    double weight_decay;        /* for parameters with decay = 1 (others: 0) */
    double beta1, beta2, eps;   /* torch defaults: 0.9, 0.999, 1e-8 */
} cx_adamw_config;

/* One step of torch.optim.AdamW (torch 1.13, foreach=False, amsgrad off) on every
 * parameter with mask[i] != 0 (mask NULL: all of them):
 *   steps[i] += 1; t = steps[i]                       (per parameter, as torch's state)
 *   p  = p * f32(1 - lr * wd)                         (decoupled decay, before the moments)
 *   m  = fma(g, f32(1 - beta1), m * f32(beta1))       (torch: m.mul_(b1).add_(g, alpha=1-b1))
 *   v  = fma(f32(1 - beta2) * g, g, v * f32(beta2))   (torch: v.mul_(b2).addcmul_(g, g, 1-b2))
 *   denom = sqrt(v) / f32(sqrt(1 - beta2^t)) + f32(eps)
 *   p  = p + (f32(-lr / (1 - beta1^t)) * m) / denom   (torch: p.addcdiv_(m, denom, -step_size))
 * Scalars are computed in double as Python does and rounded to float32 as torch's CPU
 * kernels round a Python scalar; the tensor arithmetic is float32, one rounding per
 * operation, with the two fused multiply-adds that torch's AVX2 kernels use (add_ with
 * alpha and addcmul_ compile to FMA), so on an AVX2 machine the result is bit-identical
 * to torch's float32 AdamW (checked over 30 steps). fma() is exactly rounded, so the
 * scalar fallback gives the same bits on any CPU.
 *   values, grads, exp_avg, exp_avg_sq [table->total]; steps, mask [table->count]. */
cx_status cx_adamw_step(const cx_param_table *table, const unsigned char *mask,
                        const cx_adamw_config *config, int64_t *steps, float *values,
                        const float *grads, float *exp_avg, float *exp_avg_sq);

/* A fresh optimizer (the start of each stage): zeroes both moment buffers (padding
 * included) and all step counts. exp_avg, exp_avg_sq [table->total]; steps [table->count]. */
void cx_adamw_reset(const cx_param_table *table, int64_t *steps, float *exp_avg,
                    float *exp_avg_sq);

/* ---- learning-rate schedules (schedule.c) ------------------------------------------
 * One schedule per stage, indexed by the optimizer step within the stage, and applied to
 * each group with its own base lr (the schedule's peak): lr = f(step, base_lr). */
typedef enum {
    CX_SCHEDULE_ONECYCLE = 0, /* torch's OneCycleLR: pct_start 0.1, cos, div 25, final 1e4 */
    CX_SCHEDULE_COSINE = 1,   /* linear warmup, then cosine to min_lr at the last step */
} cx_schedule_kind;

typedef struct {
    cx_schedule_kind kind;
    int64_t total_steps;  /* optimizer steps in the stage (>= 1) */
    int64_t warmup_steps; /* cosine: linear-warmup steps (clamped to total_steps) */
    double min_lr;        /* cosine: the floor at stage_lr; a group's floor is
                           * min_lr * base_lr / stage_lr (the schedule is a factor) */
    double stage_lr;      /* cosine: the stage's lr (lr in stage 1, stage2_lr in stage 2) */
} cx_schedule;

/* lr at `step` (0-based, < total_steps) for a group whose base lr is base_lr, in double
 * with Python's operation order (the twin's onecycle_lr / cosine_warmup_lr, bit for bit).
 * OneCycle: phase 1 ends at e1 = 0.1 * T - 1, phase 2 at T - 1; lr = end + (start - end)
 * / 2 * (cos(pi * pct) + 1); a zero-width phase (T = 10: torch divides by zero) uses
 * pct = 0. Cosine: s < W: base * (s + 1) / W; else min + (base - min) * (1 + cos(pi q))
 * / 2, q = (s - W) / (T - 1 - W) (1 when T - 1 - W <= 0). */
cx_status cx_schedule_lr(const cx_schedule *schedule, int64_t step, double base_lr,
                         double *lr);

/* The whole run's lr plan (the twin's Trainer): stage 1 = steps [0, stage1_steps) trains
 * the head at `lr` with the backbone frozen; stage 2 = the next stage2_steps trains the
 * head at stage2_lr and the backbone at stage2_lr * backbone_lr_mult; each stage has its
 * own schedule over its own steps. */
typedef struct {
    cx_schedule_kind kind;
    int64_t stage_steps[2]; /* optimizer steps of stage 1 and stage 2 (either may be 0) */
    int64_t warmup_steps;   /* cosine: per stage */
    double lr, stage2_lr, backbone_lr_mult, min_lr;
} cx_lr_plan;

typedef struct {
    int stage;          /* 1 or 2 */
    int64_t stage_step; /* 0-based step within the stage */
    int stage_begins;   /* 1 on a stage's first step: reset the optimizer (cx_adamw_reset)
                         * and switch the mask (cx_optim_stage_mask) */
    double lr[CX_OPTIM_GROUPS]; /* per group; 0 for the frozen backbone in stage 1 */
} cx_lr_step;

/* Where global optimizer step `step` (0-based) falls in the plan and its lrs;
 * CX_EINVAL when step is outside [0, stage_steps[0] + stage_steps[1]). */
cx_status cx_lr_plan_at(const cx_lr_plan *plan, int64_t step, cx_lr_step *out);

/* ---- gradient norm, clipping, scaling (clip.c) -------------------------------------- */

/* sqrt(sum of g^2) over the masked parameters (mask NULL: all), accumulated in double:
 * each fixed chunk of CX_REDUCE_CHUNK floats of the buffer sums its part in a fixed
 * order, the partials are added in chunk order. Infinite or NaN when a gradient is
 * (the trainer's overflow check). grads [table->total]. Uses the calling thread's
 * scratch slot 0 for the partials (2 floats per chunk). */
#define CX_REDUCE_CHUNK 16384
cx_status cx_grad_norm(const cx_param_table *table, const unsigned char *mask,
                       const float *grads, double *norm);

/* torch.nn.utils.clip_grad_norm_ (the twin's interpretation 12): norm as above, then
 * grads *= f32(min(1, max_norm / (norm + 1e-6))) over the masked parameters (left alone
 * when that factor is 1, or the norm is not finite). *norm gets the norm before
 * clipping. max_norm <= 0 only measures. */
cx_status cx_clip_grad_norm(const cx_param_table *table, const unsigned char *mask,
                            float *grads, double max_norm, double *norm);
/* The clipping factor min(1, max_norm / (norm + 1e-6)) (double). */
double cx_clip_factor(double norm, double max_norm);

/* grads *= scale over the masked parameters (gradient accumulation, loss-scale
 * removal). grads [table->total]. */
void cx_grads_scale(const cx_param_table *table, const unsigned char *mask, float *grads,
                    float scale);

/* ---- EMA of the weights (ema.c) ----------------------------------------------------- */

/* d_t = min(decay, (1 + t) / (10 + t)) in double; t = EMA updates done before this one
 * (counted over the whole run, not reset at stage 2). */
double cx_ema_decay_at(double decay, int64_t t);
/* ema = values for every parameter (the shadow's start, before step 0). */
void cx_ema_init(const cx_param_table *table, const float *values, float *ema);
/* After optimizer step t: ema = fma(w, f32(1 - d), ema * f32(d)) for every parameter,
 * backbone included (torch float32: shadow.mul_(d).add_(w, alpha=1-d) on AVX2).
 * *decay_used (may be NULL) gets d. values, ema [table->total]. */
void cx_ema_update(const cx_param_table *table, double decay, int64_t t,
                   const float *values, float *ema, double *decay_used);

/* ---- internal: chunked iteration over the parameters (optim.c) ---------------------- */

/* Calls fn(ctx, param index, begin, end) for the pieces [begin, end) (buffer offsets) of
 * the masked parameters that lie in chunk `chunk` of CX_REDUCE_CHUNK floats, in buffer
 * order. */
typedef void (*cx_piece_fn)(void *ctx, int param, size_t begin, size_t end);
void cx_optim_chunk_pieces(const cx_param_table *table, const unsigned char *mask,
                           int64_t chunk, cx_piece_fn fn, void *ctx);
/* Number of chunks of CX_REDUCE_CHUNK floats covering table->total. */
int64_t cx_optim_n_chunks(const cx_param_table *table);

#endif
