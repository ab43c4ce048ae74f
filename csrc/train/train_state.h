/* The training state saved beside a checkpoint's weights (docs/training.md): run
 * position, RNG counters, AdamW moments and step counts, the EMA weights and the loss
 * scale, so that a resumed run continues bit-exactly.
 *
 * File: safetensors (csrc/io/safetensors.h), written atomically (temp file, fsync,
 * rename). Tensors, float32, each with its parameter's shape:
 *   "ema.<param name>"          every parameter
 *   "exp_avg.<param name>"      AdamW first moment   } only parameters whose step count
 *   "exp_avg_sq.<param name>"   AdamW second moment  } is > 0 (torch keeps no state for the
 *                                                      others; their moments are zero)
 * Metadata (strings): "format" = "codext.train_state", "format_version" = "1", the scalars
 * below in decimal ("%.17g" for doubles, so they read back to the same bits),
 * "param_steps" = JSON list of the per-parameter AdamW step counts in table order, and
 * any extra key/value pairs the caller adds (config JSON, history ...). */
#ifndef CX_TRAIN_STATE_H
#define CX_TRAIN_STATE_H

#include "../core/cx.h"
#include "../io/safetensors.h"
#include "../model/params.h"

#define CX_TRAIN_STATE_FORMAT "codext.train_state"

typedef struct {
    /* run position */
    int64_t step;          /* optimizer steps completed in the whole run */
    int64_t epoch;         /* epochs completed */
    int64_t epoch_step;    /* optimizer steps completed within the current epoch */
    int stage;             /* stage of the last completed step: 0 before any step, 1 or 2 */
    int64_t stage_step;    /* steps completed within that stage (the schedule position) */
    /* RNG counters: shuffling and augmentation draw from (seed, epoch, sample index) */
    uint64_t seed;
    /* EMA */
    int64_t ema_updates;   /* updates done = t of the next update */
    /* mixed precision (dynamic loss scaling; 1 and 0 without AMP) */
    int loss_scaling;      /* the scale below is live (the run scales its loss: fp16); a file
                              written before this field: live when the scale is not 1 or
                              its good-step count is not 0 */
    double loss_scale;
    int64_t loss_scale_good_steps; /* finite steps since the scale last changed */
    /* buffers in the parameter table's layout, owned by the caller */
    float *exp_avg;        /* [table->total] */
    float *exp_avg_sq;     /* [table->total] */
    float *ema;            /* [table->total] */
    int64_t *param_steps;  /* [table->count] AdamW step count per parameter */
} cx_train_state;

/* Allocates the four buffers (zeroed, 64-byte aligned) and sets the scalars to a fresh
 * run (loss_scale 1); cx_train_state_free releases them. */
cx_status cx_train_state_alloc(const cx_param_table *table, cx_train_state *state);
void cx_train_state_free(cx_train_state *state);

/* Writes the state atomically to path; n_extra metadata pairs are added (their keys must
 * not collide with the state's own keys). CX_EIO naming the path when it cannot be
 * written (an existing file is then left as it was). */
cx_status cx_train_state_save(const char *path, const cx_param_table *table,
                              const cx_train_state *state, int n_extra,
                              const char *const *extra_keys, const char *const *extra_values);

/* Reads a state written by cx_train_state_save into `state`, whose buffers the caller
 * has allocated for `table`. Checks that it belongs to this parameter table: a missing,
 * extra or differently shaped tensor fails with CX_EINVAL naming the parameter and both
 * shapes; a file that is not a training state, or a malformed value, fails with CX_EIO.
 * Moments of parameters with step count 0 are zeroed. On failure `state` may be partly
 * written. When file_out is not NULL it receives the open file (for the extra metadata;
 * close it with cx_st_close), else the file is closed. */
cx_status cx_train_state_load(const char *path, const cx_param_table *table,
                              cx_train_state *state, cx_st_file **file_out);

/* The value of metadata `key` in an open file, or NULL. */
const char *cx_train_state_meta(const cx_st_file *file, const char *key);

#endif
