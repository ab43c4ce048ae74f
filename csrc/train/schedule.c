/* Learning-rate schedules per stage (see optim.h). Every formula follows the twin's
 * Python (tools/cod_twin.py: onecycle_lr, cosine_warmup_lr, Trainer.lr_at) operation for
 * operation in double, so the values are bit-identical to it (and OneCycle to torch's
 * OneCycleLR, which the twin checks bit for bit). Do not "simplify" the arithmetic:
 * (a * b) / c and a * (b / c) round differently. */
#include "optim.h"

#include <math.h>

/* torch.optim.lr_scheduler.OneCycleLR with the recipe's settings (docs/training.md) */
#define ONECYCLE_PCT_START 0.1
#define ONECYCLE_DIV 25.0
#define ONECYCLE_FINAL_DIV 1e4

static double anneal_cos(double lr_from, double lr_to, double pct) {
    return lr_to + (lr_from - lr_to) / 2.0 * (cos(M_PI * pct) + 1.0);
}

static double onecycle_lr(int64_t step, int64_t total_steps, double max_lr) {
    double initial = max_lr / ONECYCLE_DIV;
    double final = initial / ONECYCLE_FINAL_DIV;
    /* phases: ends e1 = float(pct_start * T) - 1 (initial -> max), T - 1 (max -> final) */
    double end1 = ONECYCLE_PCT_START * (double)total_steps - 1.0;
    double s = (double)step;
    if (s <= end1) {
        double pct = end1 != 0.0 ? s / end1 : 0.0; /* start 0: torch divides 0 by 0 at T = 10 */
        return anneal_cos(initial, max_lr, pct);
    }
    double end2 = (double)(total_steps - 1);
    double pct = end2 != end1 ? (s - end1) / (end2 - end1) : 0.0;
    return anneal_cos(max_lr, final, pct);
}

static double cosine_lr(int64_t step, int64_t total_steps, int64_t warmup_steps, double base_lr,
                        double min_lr) {
    if (warmup_steps > total_steps)
        warmup_steps = total_steps;
    if (step < warmup_steps)
        return base_lr * (double)(step + 1) / (double)warmup_steps;
    int64_t span = total_steps - 1 - warmup_steps;
    double q = span > 0 ? (double)(step - warmup_steps) / (double)span : 1.0;
    return min_lr + (base_lr - min_lr) * (1.0 + cos(M_PI * q)) / 2.0;
}

cx_status cx_schedule_lr(const cx_schedule *schedule, int64_t step, double base_lr,
                         double *lr) {
    if (schedule->total_steps < 1)
        return cx_fail(CX_EINVAL, "a schedule needs at least 1 step, got %lld",
                       (long long)schedule->total_steps);
    if (step < 0 || step >= schedule->total_steps)
        return cx_fail(CX_EINVAL, "step %lld outside a schedule of %lld steps", (long long)step,
                       (long long)schedule->total_steps);
    switch (schedule->kind) {
    case CX_SCHEDULE_ONECYCLE:
        *lr = onecycle_lr(step, schedule->total_steps, base_lr);
        return CX_OK;
    case CX_SCHEDULE_COSINE:
        if (schedule->warmup_steps < 0)
            return cx_fail(CX_EINVAL, "warmup steps %lld < 0", (long long)schedule->warmup_steps);
        if (!(schedule->stage_lr > 0.0))
            return cx_fail(CX_EINVAL, "cosine schedule: stage lr %g must be > 0",
                           schedule->stage_lr);
        /* each group's floor: min_lr scaled like its base (twin: min_lr * base / stage_lr) */
        *lr = cosine_lr(step, schedule->total_steps, schedule->warmup_steps, base_lr,
                        schedule->min_lr * base_lr / schedule->stage_lr);
        return CX_OK;
    }
    return cx_fail(CX_EINVAL, "unknown schedule kind %d", (int)schedule->kind);
}

cx_status cx_lr_plan_at(const cx_lr_plan *plan, int64_t step, cx_lr_step *out) {
    int64_t s1 = plan->stage_steps[0], s2 = plan->stage_steps[1];
    if (s1 < 0 || s2 < 0)
        return cx_fail(CX_EINVAL, "stage lengths %lld, %lld must be >= 0", (long long)s1,
                       (long long)s2);
    if (step < 0 || step >= s1 + s2)
        return cx_fail(CX_EINVAL, "step %lld outside a run of %lld optimizer steps",
                       (long long)step, (long long)(s1 + s2));
    int stage = step < s1 ? 1 : 2;
    int64_t stage_step = stage == 1 ? step : step - s1;
    cx_schedule schedule = {
        .kind = plan->kind,
        .total_steps = stage == 1 ? s1 : s2,
        .warmup_steps = plan->warmup_steps,
        .min_lr = plan->min_lr,
        .stage_lr = stage == 1 ? plan->lr : plan->stage2_lr,
    };
    out->stage = stage;
    out->stage_step = stage_step;
    out->stage_begins = stage_step == 0;
    if (stage == 1) {
        out->lr[CX_GROUP_BACKBONE] = 0.0;
        return cx_schedule_lr(&schedule, stage_step, plan->lr, &out->lr[CX_GROUP_HEAD]);
    }
    /* twin: base = stage2_lr * (backbone_lr_mult if backbone else 1.0) */
    CX_TRY(cx_schedule_lr(&schedule, stage_step, plan->stage2_lr * 1.0, &out->lr[CX_GROUP_HEAD]));
    return cx_schedule_lr(&schedule, stage_step, plan->stage2_lr * plan->backbone_lr_mult,
                          &out->lr[CX_GROUP_BACKBONE]);
}
