/* Why a training step stopped (trainer.h): a loss part or a gradient that is not finite,
 * named with the step, the micro-batch and the parameter nearest the loss. On a device
 * trainer the weights and gradients are copied to the host first (error paths only). */
#include "trainer.h"

#include <math.h>
#include <stdio.h>

/* NaN without its sign, so messages say "nan" rather than "-nan". */
static double shown(double v) { return isnan(v) ? fabs(v) : v; }

/* The first parameter (mask NULL: any) holding a value that is not finite in buf, or -1;
 * *bad gets that value. */
static int first_nonfinite(const cx_param_table *table, const unsigned char *mask,
                           const float *buf, float *bad) {
    for (int i = 0; i < table->count; i++) {
        if (mask && !mask[i])
            continue;
        const cx_param *p = &table->items[i];
        const float *v = buf + p->offset;
        for (size_t j = 0; j < p->numel; j++)
            if (!isfinite(v[j])) {
                *bad = v[j];
                return i;
            }
    }
    return -1;
}

/* "; the weights were already not finite (first: <name> = nan)" or "" */
static void weights_note(const cx_trainer *t, char *note, size_t size) {
    float bad = 0.0f;
    const cx_cod_model *m = t->model;
    float *copy = t->dev ? cx_backend_host_copy(m->be, m->params, m->table.total) : NULL;
    const float *values = t->dev ? copy : m->params;
    int i = values ? first_nonfinite(&m->table, NULL, values, &bad) : -1;
    cx_aligned_free(copy);
    if (i < 0)
        snprintf(note, size, "%s", "");
    else
        snprintf(note, size, "; the weights are not finite (first: %s = %g): the lr or an "
                 "earlier update overflowed, or the initial/pretrained weights hold inf/NaN",
                 t->model->table.items[i].name, shown(bad));
}

/* Fails when a loss part of micro-batch `micro` (its parts) is not finite. */
cx_status cx_trainer_check_loss(const cx_trainer *t, const cx_cod_loss_parts *p, int stage,
                                int micro) {
    const cx_cod_model *m = t->model;
    if (isfinite(p->total))
        return CX_OK;
    char what[256] = "";
    size_t len = 0;
    static const char *const role[4] = {"the prediction p1", "deep supervision p2",
                                        "deep supervision p3", "deep supervision p4"};
    for (int k = 0; k < 4; k++)
        if (!isfinite(p->loss[k]) && len < sizeof what)
            len += (size_t)snprintf(what + len, sizeof what - len, "%sloss%d (%s) = %g",
                                    len ? ", " : "", k, role[k], shown(p->loss[k]));
    if (m->cfg.top_k > 0 && !isfinite(p->balance) && len < sizeof what)
        len += (size_t)snprintf(what + len, sizeof what - len, "%sbalance = %g",
                                len ? ", " : "", shown(p->balance));
    if (!len)
        snprintf(what, sizeof what, "total = %g", shown(p->total));
    char note[256];
    weights_note(t, note, sizeof note);
    return cx_fail(CX_ERUNTIME, "training stopped at step %lld (epoch %lld, stage %d, "
                   "micro-batch %d): the loss is not finite: %s%s", (long long)t->state.step,
                   (long long)t->state.epoch, stage, micro, what, note);
}

/* Names the parameter nearest the loss (last in buffer order: backward reaches it first)
 * whose gradient is not finite, and how many are. */
cx_status cx_trainer_gradient_overflow(const cx_trainer *t, double norm, int stage) {
    const cx_param_table *table = &t->model->table;
    int origin = -1, count = 0;
    float bad = 0.0f;
    float *copy = NULL;
    const float *grads = t->model->grads;
    if (t->dev) {
        copy = cx_backend_host_copy(t->model->be, grads, table->total);
        if (!copy)
            return CX_ERUNTIME; /* the copy's error names what went wrong */
        grads = copy;
    }
    for (int i = table->count - 1; i >= 0; i--) {
        float value;
        if (!t->mask[i])
            continue;
        cx_param_table one = {.items = (cx_param *)&table->items[i], .count = 1,
                              .total = table->total};
        if (first_nonfinite(&one, NULL, grads, &value) >= 0) {
            if (origin < 0) {
                origin = i;
                bad = value;
            }
            count++;
        }
    }
    cx_aligned_free(copy);
    char note[256];
    weights_note(t, note, sizeof note);
    if (origin < 0)
        return cx_fail(CX_ERUNTIME, "training stopped at step %lld (epoch %lld, stage %d): the "
                       "gradient norm overflowed (%g) although every gradient is finite%s",
                       (long long)t->state.step, (long long)t->state.epoch, stage, shown(norm),
                       note);
    return cx_fail(CX_ERUNTIME, "training stopped at step %lld (epoch %lld, stage %d): the "
                   "gradient of %s is not finite (%g; %d of %d trained tensors have non-finite "
                   "gradients, this one is the nearest to the loss)%s",
                   (long long)t->state.step, (long long)t->state.epoch, stage,
                   table->items[origin].name, shown(bad), count, table->count, note);
}
