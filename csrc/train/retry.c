/* A step that runs again (trainer.h): out of memory in a micro-batch (the micro-batch is
 * halved) or, under dynamic loss scaling, a gradient that overflowed (the scale is
 * halved). Either way the step's update has not happened yet, every rank reaches the same
 * decision from numbers they share (the all-reduced count of ranks out of memory, the
 * all-reduced gradients' norm), and step_with() runs the step again on the same rows. */
#include "trainer.h"

#include <math.h>

#define SCALE_FLOOR (1.0 / 16777216.0) /* 2^-24: below it an overflow is not the scale's */
#define SCALE_CEILING 16777216.0       /* 2^24 */

cx_status cx_trainer_halve_micro_batch(cx_trainer *t, int ranks) {
    int B = t->cfg.batch_size, A = t->cfg.accumulation_steps;
    long long step = (long long)t->state.step;
    if (B < 2 || B % 2 != 0 || 2 * A > CX_TRAINER_MAX_ACCUMULATION)
        return cx_fail(CX_ENOMEM, "out of memory in step %lld on %d of %d rank(s) with "
                       "micro-batches of %d image(s) (accumulation %d), which cannot be halved "
                       "further (%s): lower the image size or the model size", step, ranks,
                       t->cfg.world_size, B, A,
                       B < 2 ? "one image" : B % 2 ? "an odd count" : "accumulation at its limit");
    t->cfg.batch_size = B / 2;
    t->cfg.accumulation_steps = 2 * A;
    t->oom_halvings++;
    t->oom_last_step = t->state.step;
    t->oom_last_ranks = ranks;
    t->step_retry = 1;
    return CX_OK;
}

int cx_trainer_back_off_scale(cx_trainer *t) {
    cx_train_state *s = &t->state;
    if (!t->cfg.loss_scaling || s->loss_scale * 0.5 < SCALE_FLOOR)
        return 0;
    s->loss_scale *= 0.5;
    s->loss_scale_good_steps = 0;
    t->overflow_retries++;
    t->step_retry = 1;
    return 1;
}

void cx_trainer_grow_scale(cx_trainer *t) {
    cx_train_state *s = &t->state;
    if (!t->cfg.loss_scaling)
        return;
    if (++s->loss_scale_good_steps >= t->cfg.loss_scale_growth_interval) {
        s->loss_scale_good_steps = 0;
        if (s->loss_scale * 2.0 <= SCALE_CEILING)
            s->loss_scale *= 2.0;
    }
}

int cx_trainer_fault_fires(cx_trainer_fault *f, int64_t step) {
    if (f->step < 0 || f->step != step)
        return 0;
    if (--f->times <= 0)
        f->step = -1;
    return 1;
}

void cx_trainer_inject_overflow(cx_trainer *t) {
    if (!cx_trainer_fault_fires(&t->overflow_fault, t->state.step))
        return;
    const cx_param_table *table = &t->model->table;
    for (int i = 0; i < table->count; i++)
        if (t->mask[i]) {
            float inf = INFINITY;
            t->model->be->upload(t->model->be, t->model->grads + table->items[i].offset, &inf, 1);
            return;
        }
}
