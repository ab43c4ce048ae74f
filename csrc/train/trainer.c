/* The single-process C trainer (see trainer.h). */
#include "trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Distinguishes the epoch permutation's draws from other users of the counter RNG. */
#define PERM_STREAM_BASE 0x7065726D75746531ull /* "permute1" */

/* ---- create / free ------------------------------------------------------------------- */

static cx_status check_config(const cx_trainer_config *c) {
    if (c->batch_size < 1 || c->batch_size > CX_TRAINER_MAX_BATCH)
        return cx_fail(CX_EINVAL, "batch_size must be in 1..%d, got %d", CX_TRAINER_MAX_BATCH,
                       c->batch_size);
    if (c->accumulation_steps < 1 || c->accumulation_steps > CX_TRAINER_MAX_ACCUMULATION)
        return cx_fail(CX_EINVAL, "accumulation_steps must be in 1..%d, got %d",
                       CX_TRAINER_MAX_ACCUMULATION, c->accumulation_steps);
    if (c->epochs < 1 || c->epochs > CX_TRAINER_MAX_EPOCHS)
        return cx_fail(CX_EINVAL, "epochs must be in 1..%d, got %lld", CX_TRAINER_MAX_EPOCHS,
                       (long long)c->epochs);
    if (c->stage1_epochs < 0 || c->stage1_epochs > c->epochs)
        return cx_fail(CX_EINVAL, "stage1_epochs must lie in [0, epochs = %lld], got %lld",
                       (long long)c->epochs, (long long)c->stage1_epochs);
    if (c->bucket_floats < 0 || c->bucket_floats > CX_TRAINER_MAX_ROWS)
        return cx_fail(CX_EINVAL, "bucket_floats must be in 0..%lld, got %lld",
                       (long long)CX_TRAINER_MAX_ROWS, (long long)c->bucket_floats);
    if (c->overlap_comm < 0 || c->overlap_comm > 1)
        return cx_fail(CX_EINVAL, "overlap_comm must be 0 or 1, got %d", c->overlap_comm);
    if (c->prefetch < -1 || c->prefetch > 1)
        return cx_fail(CX_EINVAL, "prefetch must be -1 (auto), 0 or 1, got %d", c->prefetch);
    if (c->scheduler != CX_SCHEDULE_ONECYCLE && c->scheduler != CX_SCHEDULE_COSINE)
        return cx_fail(CX_EINVAL, "unknown scheduler %d", (int)c->scheduler);
    if (!(c->lr > 0 && isfinite(c->lr)) || !(c->stage2_lr > 0 && isfinite(c->stage2_lr)))
        return cx_fail(CX_EINVAL, "lr and stage2_lr must be finite and > 0, got %g and %g", c->lr,
                       c->stage2_lr);
    if (!(c->backbone_lr_mult >= 0 && isfinite(c->backbone_lr_mult)))
        return cx_fail(CX_EINVAL, "backbone_lr_mult must be finite and >= 0, got %g",
                       c->backbone_lr_mult);
    /* the bound keeps (int64_t)(warmup_epochs x steps_per_epoch) defined */
    if (!(c->warmup_epochs >= 0 && c->warmup_epochs <= CX_TRAINER_MAX_EPOCHS))
        return cx_fail(CX_EINVAL, "warmup_epochs must lie in [0, %d], got %g",
                       CX_TRAINER_MAX_EPOCHS, c->warmup_epochs);
    if (!(c->min_lr >= 0 && isfinite(c->min_lr)))
        return cx_fail(CX_EINVAL, "min_lr must be finite and >= 0, got %g", c->min_lr);
    if (!(c->weight_decay >= 0 && isfinite(c->weight_decay)))
        return cx_fail(CX_EINVAL, "weight_decay must be finite and >= 0, got %g", c->weight_decay);
    if (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1))
        return cx_fail(CX_EINVAL, "betas must lie in [0, 1), got (%g, %g)", c->beta1, c->beta2);
    if (!(c->eps > 0 && isfinite(c->eps)))
        return cx_fail(CX_EINVAL, "eps must be finite and > 0, got %g", c->eps);
    if (!(c->grad_clip >= 0 && isfinite(c->grad_clip)))
        return cx_fail(CX_EINVAL, "grad_clip must be finite and >= 0 (0: off), got %g",
                       c->grad_clip);
    if (!(c->ema_decay >= 0 && c->ema_decay < 1))
        return cx_fail(CX_EINVAL, "ema_decay must lie in [0, 1), got %g", c->ema_decay);
    if (c->world_size < 0 || c->world_size > CX_COMM_MAX_RANKS ||
        c->rank < 0 || c->rank >= (c->world_size > 1 ? c->world_size : 1))
        return cx_fail(CX_EINVAL, "rank %d of world_size %d: the world size must lie in 1..%d "
                       "and the rank in 0..world_size-1", c->rank, c->world_size,
                       CX_COMM_MAX_RANKS);
    if (c->loss_scaling) {
        int exponent;
        double mantissa = frexp(c->loss_scale_init, &exponent);
        if (!(c->loss_scale_init >= 1.0 && c->loss_scale_init <= 16777216.0) || mantissa != 0.5)
            return cx_fail(CX_EINVAL, "loss_scale_init must be a power of two in [1, 2^24], "
                           "got %g", c->loss_scale_init);
        if (c->loss_scale_growth_interval < 1 || c->loss_scale_growth_interval > CX_TRAINER_MAX_ROWS)
            return cx_fail(CX_EINVAL, "loss_scale_growth_interval must be in 1..2^40, got %lld",
                           (long long)c->loss_scale_growth_interval);
    }
    return CX_OK;
}

/* expert_of[i] for "neck.{s}.moe.experts.{e}." parameters, else -1. */
static void map_experts(const cx_param_table *table, int *expert_of) {
    for (int i = 0; i < table->count; i++) {
        int s, e, n = 0;
        expert_of[i] = -1;
        if (sscanf(table->items[i].name, "neck.%d.moe.experts.%d.%n", &s, &e, &n) == 2 && n > 0 &&
            s >= 0 && s < 4 && e >= 0 && e < CX_COD_MAX_EXPERTS)
            expert_of[i] = s * CX_COD_MAX_EXPERTS + e;
    }
}

/* The prefetch's `ready` on a CUDA model: the batch built into host buffer `slot` (pinned)
 * is queued on the copy stream into device buffer `slot` (prefetch.h). */
static cx_status upload_batch(void *ctx, int slot, const float *x, size_t n_x, const float *y,
                              size_t n_y) {
    cx_trainer *t = ctx;
    const cx_cuda_api *api = t->dev->api;
    cx_backend *be = t->model->be;
    CX_TRY(api->copy_upload(be, t->batch_dev_x[slot], x, n_x * sizeof(float), slot));
    return api->copy_upload(be, t->batch_dev_y[slot], y, n_y * sizeof(float), slot);
}

/* The prefetch's `claim`: the last upload from pinned buffer `slot` is done before it is
 * rewritten (the step no longer waits for the model's stream per micro-batch). */
static cx_status claim_batch(void *ctx, int slot) {
    cx_trainer *t = ctx;
    return t->dev->api->copy_claim(t->model->be, slot);
}

/* A CUDA model's data path: the copy stream, two device batch buffers and the prefetch with
 * pinned host buffers whose batches go up on the copy stream while the step computes. */
static cx_status device_batches(cx_trainer *t, size_t x_floats, size_t y_floats) {
    cx_backend *be = t->model->be;
    const cx_cuda_api *api = t->dev->api;
    CX_TRY(api->copy_stream_setup(be));
    for (int i = 0; i < 2; i++) {
        t->batch_dev_x[i] = be->alloc(be, x_floats * sizeof(float));
        t->batch_dev_y[i] = t->batch_dev_x[i] ? be->alloc(be, y_floats * sizeof(float)) : NULL;
        if (!t->batch_dev_y[i])
            return CX_ENOMEM; /* alloc reported it */
    }
    CX_TRY(cx_prefetch_create(x_floats, y_floats, api->host_alloc, api->host_free, be,
                              upload_batch, t, &t->prefetch));
    cx_prefetch_on_claim(t->prefetch, claim_batch);
    return CX_OK;
}

/* A device step's loss read-backs: pinned, so that queuing them does not wait. */
static cx_status loss_records(cx_trainer *t) {
    size_t micro_batches = (size_t)t->cfg.batch_size * (size_t)t->cfg.accumulation_steps;
    t->loss_records = t->dev->api->host_alloc(t->model->be, micro_batches *
                                              cx_cod_loss_record_floats(1) * sizeof(float));
    t->micro_balance = calloc(micro_batches, sizeof(double));
    if (!t->loss_records)
        return CX_ENOMEM; /* host_alloc reported it */
    return t->micro_balance ? CX_OK : cx_fail(CX_ENOMEM, "out of memory for the loss records");
}

cx_status cx_trainer_create(cx_cod_model *model, const cx_trainer_config *cfg,
                            int64_t n_train, int height, int width, cx_trainer **out) {
    *out = NULL;
    CX_TRY(check_config(cfg));
    int device = cx_device_step_applies(model->be);
    if (model->be != cx_backend_cpu() && !device)
        return cx_fail(CX_EINVAL, "the C trainer runs models on the CPU or a CUDA backend, not "
                       "'%s'", model->be->name);
    CX_TRY(cx_edgenext_check_input(&model->backbone, cfg->batch_size, 3, height, width));
    if (height > CX_TRAINER_MAX_SIDE || width > CX_TRAINER_MAX_SIDE)
        return cx_fail(CX_EINVAL, "training images of %dx%d exceed the trainer's %dx%d", height,
                       width, CX_TRAINER_MAX_SIDE, CX_TRAINER_MAX_SIDE);
    if (n_train < 0 || n_train > CX_TRAINER_MAX_ROWS)
        return cx_fail(CX_EINVAL, "n_train must be in 0..%lld, got %lld",
                       (long long)CX_TRAINER_MAX_ROWS, (long long)n_train);
    /* with the bounds above none of these products overflows: B A W <= 2^22 x
     * CX_COMM_MAX_RANKS, steps_per_epoch x epochs <= 2^40 x 10^5 < 2^57, B x 3 x H x W <=
     * 2^12 x 3 x 2^26 floats */
    int world = cfg->world_size > 1 ? cfg->world_size : 1;
    int64_t global = (int64_t)cfg->batch_size * cfg->accumulation_steps * world;
    if (n_train < global)
        return cx_fail(CX_EINVAL, "%lld training images make no full global batch of "
                       "batch_size %d x accumulation_steps %d x %d ranks = %lld (the last "
                       "incomplete batch of each epoch is dropped)", (long long)n_train,
                       cfg->batch_size, cfg->accumulation_steps, world, (long long)global);
    cx_trainer *t = calloc(1, sizeof *t);
    if (!t)
        return cx_fail(CX_ENOMEM, "out of memory creating the trainer");
    t->model = model;
    t->cfg = *cfg;
    t->cfg.world_size = world;
    t->n_train = n_train;
    t->height = height;
    t->width = width;
    t->perm_epoch = -1;
    t->oom_fault = (cx_trainer_fault){-1, 0};
    t->oom_last_step = -1;
    t->overflow_fault = (cx_trainer_fault){-1, 0};
    t->steps_per_epoch = n_train / global;
    t->total_steps = t->steps_per_epoch * cfg->epochs;
    t->plan = (cx_lr_plan){
        .kind = cfg->scheduler,
        .stage_steps = {cfg->stage1_epochs * t->steps_per_epoch,
                        (cfg->epochs - cfg->stage1_epochs) * t->steps_per_epoch},
        .warmup_steps = (int64_t)(cfg->warmup_epochs * (double)t->steps_per_epoch),
        .lr = cfg->lr, .stage2_lr = cfg->stage2_lr, .backbone_lr_mult = cfg->backbone_lr_mult,
        .min_lr = cfg->min_lr};
    cx_optim_classify(&model->table);
    const char *sync = device ? getenv("CODEXT_CUDA_SYNC") : NULL;
    if (sync && *sync && strcmp(sync, "pass") != 0 && strcmp(sync, "step") != 0) {
        free(t);
        return cx_fail(CX_EINVAL, "CODEXT_CUDA_SYNC must be 'step' (the default: the GPU is "
                       "waited for per loss and per optimizer step) or 'pass' (after every "
                       "pass), got '%.40s'", sync);
    }
    t->wait_each_pass = sync && strcmp(sync, "pass") == 0;
    cx_status st;
    if (device) { /* the buffers live on the device; the host keeps the scalars */
        memset(&t->state, 0, sizeof t->state);
        t->state.loss_scale = 1.0;
        st = cx_device_step_create(model->be, &model->table, model->params, &t->dev);
        if (st == CX_OK)
            st = loss_records(t);
    } else {
        st = cx_train_state_alloc(&model->table, &t->state);
    }
    if (st != CX_OK) {
        cx_trainer_free(t); /* whatever was made */
        return st;
    }
    int count = model->table.count;
    size_t plane = (size_t)height * width;
    t->mask = calloc((size_t)count + 1, 1);
    t->expert_of = calloc((size_t)count + 1, sizeof(int));
    t->perm = malloc((size_t)n_train * sizeof(int64_t));
    int prefetch = cfg->prefetch < 0 ? device : cfg->prefetch;
    if (!prefetch) { /* else the prefetch's two buffers hold the batches */
        t->x = cx_aligned_alloc((size_t)cfg->batch_size * 3 * plane * sizeof(float));
        t->y = cx_aligned_alloc((size_t)cfg->batch_size * plane * sizeof(float));
    }
    if (!t->mask || !t->expert_of || !t->perm || (!prefetch && (!t->x || !t->y))) {
        cx_trainer_free(t);
        return cx_fail(CX_ENOMEM, "out of memory for the trainer's buffers (%lld rows, batch "
                       "%d of %dx%d)", (long long)n_train, cfg->batch_size, height, width);
    }
    if (prefetch) {
        size_t x_floats = (size_t)cfg->batch_size * 3 * plane, y_floats = x_floats / 3;
        st = device ? device_batches(t, x_floats, y_floats)
                    : cx_prefetch_create(x_floats, y_floats, NULL, NULL, NULL, NULL, NULL,
                                         &t->prefetch);
        if (st != CX_OK) {
            cx_trainer_free(t);
            return st;
        }
    }
    map_experts(&model->table, t->expert_of);
    t->state.seed = cfg->seed;
    t->state.loss_scale = cfg->loss_scaling ? cfg->loss_scale_init : 1.0;
    t->state.loss_scaling = cfg->loss_scaling;
    if (!device) /* the device's EMA started as a copy in cx_device_step_create */
        cx_ema_init(&model->table, model->params, t->state.ema);
    *out = t;
    return CX_OK;
}

cx_status cx_trainer_check_state(const cx_trainer *t, const cx_train_state *s, const char *path) {
    int64_t spe = t->steps_per_epoch;
    /* epoch is bounded before it is multiplied: no overflow for any file */
    if (s->step < 0 || s->step > t->total_steps || s->epoch < 0 || s->epoch > t->cfg.epochs ||
        s->epoch_step < 0 || s->epoch_step >= spe || s->step != s->epoch * spe + s->epoch_step)
        return cx_fail(CX_EINVAL, "%s: run position (step %lld, epoch %lld, epoch step %lld) "
                       "does not fit this run (%lld steps per epoch, %lld epochs, %lld steps)",
                       path, (long long)s->step, (long long)s->epoch, (long long)s->epoch_step,
                       (long long)spe, (long long)t->cfg.epochs, (long long)t->total_steps);
    if (s->ema_updates != s->step)
        return cx_fail(CX_EINVAL, "%s: %lld EMA updates recorded after %lld optimizer steps "
                       "(one per step)", path, (long long)s->ema_updates, (long long)s->step);
    int stage = 0;
    int64_t stage_step = 0;
    if (s->step > 0) {
        cx_lr_step at;
        CX_TRY(cx_lr_plan_at(&t->plan, s->step - 1, &at));
        stage = at.stage;
        stage_step = at.stage_step + 1;
    }
    if (s->stage != stage || s->stage_step != stage_step)
        return cx_fail(CX_EINVAL, "%s: stage %d, stage step %lld recorded at step %lld, but this "
                       "run is then in stage %d at stage step %lld", path, s->stage,
                       (long long)s->stage_step, (long long)s->step, stage, (long long)stage_step);
    const cx_param_table *table = &t->model->table;
    int sparse = t->model->cfg.top_k > 0;
    for (int i = 0; i < table->count; i++) {
        int trained = stage == 2 || (stage == 1 && table->items[i].group != CX_GROUP_BACKBONE);
        int64_t want = trained ? stage_step : 0, got = s->param_steps[i];
        int may_skip = sparse && t->expert_of[i] >= 0; /* an expert no image was routed to */
        if (may_skip ? (got < 0 || got > want) : got != want)
            return cx_fail(CX_EINVAL, "%s: parameter %s has %lld AdamW steps, but at step %lld "
                           "(stage %d, stage step %lld) it has %s%lld", path,
                           table->items[i].name, (long long)got, (long long)s->step, stage,
                           (long long)stage_step, may_skip ? "at most " : "",
                           (long long)want);
    }
    return CX_OK;
}

void cx_trainer_free(cx_trainer *t) {
    if (!t)
        return;
    cx_prefetch_free(t->prefetch); /* joins the worker first: it reads the data */
    for (int i = 0; i < 2; i++) { /* the copy stream is idle: freeing the prefetch's pinned
                                     buffers waited for it (host_free) */
        if (t->batch_dev_x[i])
            t->model->be->free(t->model->be, t->batch_dev_x[i]);
        if (t->batch_dev_y[i])
            t->model->be->free(t->model->be, t->batch_dev_y[i]);
    }
    cx_buckets_free(t->buckets);
    cx_train_state_free(&t->state);
    if (t->loss_records) /* the model's stream may still write them: host_free waits */
        t->dev->api->host_free(t->model->be, t->loss_records);
    free(t->micro_balance);
    cx_device_step_free(t->dev);
    free(t->mask);
    free(t->expert_of);
    free(t->perm);
    cx_aligned_free(t->x);
    cx_aligned_free(t->y);
    free(t);
}

/* ---- shuffling ------------------------------------------------------------------------- */

void cx_trainer_permutation(uint64_t seed, uint64_t epoch, int64_t n, int64_t *perm) {
    uint64_t stream = PERM_STREAM_BASE ^ (epoch * 0x9E3779B97F4A7C15ull);
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        /* j uniform in [0, i]: the high 53 bits of the draw scaled by i + 1 (exact in
         * double for any n below 2^53) */
        double u = (double)(cx_rng_u64(seed, stream, (uint64_t)i) >> 11) *
                   (1.0 / 9007199254740992.0);
        int64_t j = (int64_t)(u * (double)(i + 1));
        if (j > i)
            j = i;
        int64_t tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
}

/* ---- one optimizer step ----------------------------------------------------------------- */

/* Supplies micro-batch m: *x [B, 3, H, W], *y [B, 1, H, W]. */
/* Micro-batch `micro` of the step into *x, *y: host memory, or (*on_device 1) the
 * backend's memory with its upload ordered before the step's work (the copy stream). */
typedef cx_status (*batch_fn)(void *ctx, cx_trainer *t, int micro, const float **x,
                              const float **y, int *on_device);

static void note_routing(cx_trainer *t) {
    const cx_cod_model *m = t->model;
    for (int i = 0; i < 4; i++)
        for (int e = 0; e < m->cfg.num_experts; e++)
            if (m->neck[i].n_rows[e] > 0)
                t->used[i][e] = 1;
}

static double monotonic_seconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

/* The step's tail after the backward, on the host: loss-scale removal, norm, clipping,
 * AdamW and EMA; *applied 0 (nothing changed) when the norm is not finite. */
static cx_status host_tail(cx_trainer *t, const cx_lr_step *at, double *norm, double *d,
                           int *applied) {
    cx_cod_model *m = t->model;
    const cx_param_table *table = &m->table;
    cx_train_state *s = &t->state;
    *applied = 0;
    if (t->cfg.loss_scaling) /* the gradients of loss x scale, back to those of the loss */
        cx_grads_scale(table, t->mask, m->grads, (float)(1.0 / s->loss_scale));
    CX_TRY(cx_clip_grad_norm(table, t->mask, m->grads, t->cfg.grad_clip, norm));
    if (!isfinite(*norm))
        return CX_OK;
    cx_adamw_config opt = {.lr = {at->lr[0], at->lr[1]}, .weight_decay = t->cfg.weight_decay,
                           .beta1 = t->cfg.beta1, .beta2 = t->cfg.beta2, .eps = t->cfg.eps};
    CX_TRY(cx_adamw_step(table, t->mask, &opt, s->param_steps, m->params, m->grads, s->exp_avg,
                         s->exp_avg_sq));
    cx_ema_update(table, t->cfg.ema_decay, s->ema_updates, m->params, s->ema, d);
    *applied = 1;
    return CX_OK;
}

/* The same on the device (device_step.h): one read-back, the norm and whether it applied. */
static cx_status device_tail(cx_trainer *t, const cx_lr_step *at, double *norm, double *d,
                             int *applied) {
    const cx_train_state *s = &t->state;
    *d = cx_ema_decay_at(t->cfg.ema_decay, s->ema_updates);
    cu_optim_config c = {.lr = {at->lr[0], at->lr[1]}, .weight_decay = t->cfg.weight_decay,
                         .beta1 = t->cfg.beta1, .beta2 = t->cfg.beta2, .eps = t->cfg.eps,
                         .max_norm = t->cfg.grad_clip, .ema_decay = *d};
    float unscale = t->cfg.loss_scaling ? (float)(1.0 / s->loss_scale) : 1.0f;
    return cx_device_step_run(t->dev, t->mask, unscale, &c, t->model->params, t->model->grads,
                              norm, applied);
}

static cx_status step_body(cx_trainer *t, batch_fn next_batch, void *ctx);

static cx_status step_with(cx_trainer *t, batch_fn next_batch, void *ctx) {
    cx_status st;
    do { /* again after an out-of-memory step, with the halved micro-batch */
        t->step_retry = 0;
        st = step_body(t, next_batch, ctx);
    } while (st == CX_OK && t->step_retry);
    if (st != CX_OK && t->dev) { /* passes queued before the failure: wait for them here, so
                                    that nothing they report lands on a later, unrelated call;
                                    the step's own error stays the one reported */
        char message[1024];
        snprintf(message, sizeof message, "%s", cx_last_error());
        t->model->be->sync(t->model->be);
        st = cx_fail(st, "%s", message);
    }
    if (st != CX_OK && t->comm) { /* the other ranks must not wait for this one */
        cx_comm_abort(t->comm, cx_last_error());
        st = cx_trainer_ddp_step_failed(t, st);
    }
    return st;
}

/* A queued step's losses: waits for the model's stream (the step's one wait before the
 * optimizer's), then checks micro-batches 0..n-1 in order, as the CPU trainer checks each
 * before its backward, and adds up their totals. m->parts ends as the last one's. */
static cx_status collect_losses(cx_trainer *t, int stage, int n, double *loss_sum) {
    cx_cod_model *m = t->model;
    int B = t->cfg.batch_size;
    CX_TRY(m->be->sync(m->be));
    *loss_sum = 0.0;
    for (int micro = 0; micro < n; micro++) {
        const float *record = t->loss_records + (size_t)micro * cx_cod_loss_record_floats(B);
        cx_cod_loss_parts_from(m, record, B, t->micro_balance[micro], NULL);
        CX_TRY(cx_trainer_check_loss(t, &m->parts, stage, micro));
        *loss_sum += m->parts.total;
    }
    return CX_OK;
}

static cx_status step_body(cx_trainer *t, batch_fn next_batch, void *ctx) {
    cx_cod_model *m = t->model;
    const cx_param_table *table = &m->table;
    cx_train_state *s = &t->state;
    if (s->step >= t->total_steps)
        return cx_fail(CX_EINVAL, "all %lld optimizer steps of the run are done",
                       (long long)t->total_steps);
    cx_lr_step at;
    CX_TRY(cx_lr_plan_at(&t->plan, s->step, &at));
    if (at.stage_begins && t->dev)
        CX_TRY(cx_device_step_reset(t->dev));
    else if (at.stage_begins)
        cx_adamw_reset(table, s->param_steps, s->exp_avg, s->exp_avg_sq);
    cx_optim_stage_mask(table, at.stage, t->mask);
    int A = t->cfg.accumulation_steps, B = t->cfg.batch_size;
    int sparse = m->cfg.top_k > 0, train_backbone = at.stage == 2;
    int mode = cx_cod_train_mode(train_backbone, t->cfg.gradient_checkpointing);
    memset(t->used, 0, sizeof t->used);
    cx_cod_zero_grads(m);
    double loss_sum = 0.0;
    int oom_ranks = 0; /* this rank's micro-batches ran out of memory (then, all ranks') */
    /* queued: every pass without a wait (a CUDA device); the losses are read back into
     * t->loss_records and checked by collect_losses */
    int queued = t->dev && !t->wait_each_pass, collected = 0;
    for (int micro = 0; micro < A && !oom_ranks; micro++) {
        const float *x, *y;
        int on_device = 0;
        CX_TRY(next_batch(ctx, t, micro, &x, &y, &on_device));
        cx_status st = micro == 0 && cx_trainer_fault_fires(&t->oom_fault, s->step)
                           ? cx_fail(CX_ENOMEM, "injected out-of-memory in step %lld",
                                     (long long)s->step)
                       : queued ? cx_cod_forward_queued(m, x, on_device, B, t->height, t->width, mode)
                       : on_device ? cx_cod_forward_device(m, x, B, t->height, t->width, mode)
                                   : cx_cod_forward(m, x, B, t->height, t->width, mode);
        if (st == CX_OK) {
            if (queued) {
                float *record = t->loss_records + (size_t)micro * cx_cod_loss_record_floats(B);
                CX_TRY(cx_cod_loss_queued(m, y, on_device, record, &t->micro_balance[micro]));
            } else {
                CX_TRY(on_device ? cx_cod_loss_device(m, y, NULL) : cx_cod_loss(m, y, NULL));
                CX_TRY(cx_trainer_check_loss(t, &m->parts, at.stage, micro));
                loss_sum += m->parts.total;
            }
            /* the forward copied x and the loss y out of the batch's device buffer: the
             * next upload into it waits for no more than that (the copy stream then runs
             * beside this micro-batch's backward and the next forward) */
            if (on_device)
                CX_TRY(t->dev->api->copy_release(m->be, t->batch_slot));
            if (sparse)
                note_routing(t);
            /* the twin: (loss / A).backward(), of loss x scale under loss scaling; the last
             * one averages gradient buckets over the ranks as they become final */
            if (micro == A - 1) {
                /* DDP: a rank whose loss is not finite stops before its gradients reach
                 * the other ranks, as on the CPU */
                if (queued && t->comm) {
                    CX_TRY(collect_losses(t, at.stage, A, &loss_sum));
                    collected = 1;
                }
                /* tests: the fault's infinity goes in before the last backward (gradients
                 * add up, so it stays), not after it: by then the communication thread may
                 * already be averaging the buckets */
                cx_trainer_inject_overflow(t);
                cx_trainer_ddp_backward_begins(t);
            }
            /* the gradient buckets take "finished" for a synchronized stream (buckets.c) */
            float scale = (float)(s->loss_scale / A);
            st = queued && !(t->buckets && micro == A - 1)
                     ? cx_cod_backward_queued(m, scale, train_backbone)
                     : cx_cod_backward(m, scale, train_backbone);
            cx_trainer_ddp_backward_ends(t);
        }
        if (st == CX_ENOMEM) {
            oom_ranks = 1;
            continue;
        }
        CX_TRY(st);
    }
    if (queued && !collected && !oom_ranks) /* before the optimizer: a non-finite loss
                                               stops the step with the weights untouched */
        CX_TRY(collect_losses(t, at.stage, A, &loss_sum));
    if (t->comm) {
        double began = monotonic_seconds();
        CX_TRY(cx_trainer_ddp_reduce(t, sparse, &loss_sum, &oom_ranks));
        t->comm_seconds += monotonic_seconds() - began;
    }
    if (oom_ranks > 0) /* every rank discards the step: nothing below has run */
        return cx_trainer_halve_micro_batch(t, oom_ranks);
    if (sparse)
        for (int i = 0; i < table->count; i++) {
            int key = t->expert_of[i];
            if (key >= 0 && !t->used[key / CX_COD_MAX_EXPERTS][key % CX_COD_MAX_EXPERTS])
                t->mask[i] = 0;
        }
    double norm, d;
    int applied;
    CX_TRY(t->dev ? device_tail(t, &at, &norm, &d, &applied)
                  : host_tail(t, &at, &norm, &d, &applied));
    if (!applied) {
        if (cx_trainer_back_off_scale(t)) /* every rank saw the same norm: all retry */
            return CX_OK;
        return cx_trainer_gradient_overflow(t, norm, at.stage);
    }
    cx_trainer_grow_scale(t);
    s->ema_updates++;
    s->step++;
    s->stage = at.stage;
    s->stage_step = at.stage_step + 1;
    t->last = (cx_trainer_step_info){.loss = loss_sum / A, .lr = {at.lr[0], at.lr[1]},
                                     .grad_norm = norm, .ema_decay = d, .stage = at.stage};
    return CX_OK;
}

/* ---- fixed batches (tests) -------------------------------------------------------------- */

typedef struct {
    const float *x, *y;
} fixed_batches;

static cx_status fixed_next(void *ctx, cx_trainer *t, int micro, const float **x,
                            const float **y, int *on_device) {
    *on_device = 0;
    const fixed_batches *f = ctx;
    size_t plane = (size_t)t->height * t->width, rows = (size_t)micro * t->cfg.batch_size;
    *x = f->x + rows * 3 * plane;
    *y = f->y + rows * plane;
    return CX_OK;
}

cx_status cx_trainer_step(cx_trainer *t, const float *x, const float *y, int height, int width) {
    if (height != t->height || width != t->width)
        return cx_fail(CX_EINVAL, "batch is %dx%d but the trainer was made for %dx%d images",
                       height, width, t->height, t->width);
    fixed_batches f = {x, y};
    return step_with(t, fixed_next, &f);
}

/* ---- epochs ------------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *images, *masks;
    int64_t epoch_step;
} epoch_batches;

/* Micro-batch `micro` of epoch step `epoch_step` as a job for cx_augment_batch. */
static cx_batch_job batch_job(const cx_trainer *t, const epoch_batches *e, int64_t epoch_step,
                              int micro) {
    int A = t->cfg.accumulation_steps, B = t->cfg.batch_size;
    int64_t W = t->cfg.world_size, r = t->cfg.rank;
    return (cx_batch_job){.images = e->images, .masks = e->masks, .n_images = t->n_train,
                          .height = t->height, .width = t->width,
                          .rows = t->perm + ((epoch_step * W + r) * A + micro) * B,
                          .batch = B, .seed = t->cfg.seed, .epoch = (uint64_t)t->state.epoch,
                          .augment = t->cfg.augment, .augment_config = t->cfg.augment_config};
}

static cx_status epoch_next(void *ctx, cx_trainer *t, int micro, const float **x,
                            const float **y, int *on_device) {
    const epoch_batches *e = ctx;
    cx_batch_job job = batch_job(t, e, e->epoch_step, micro);
    *on_device = 0;
    double began = monotonic_seconds(); /* the step's data wait, either way */
    if (!t->prefetch) {
        CX_TRY(cx_augment_batch(job.images, job.masks, job.n_images, job.height, job.width,
                                job.rows, job.batch, job.seed, job.epoch, job.augment,
                                &job.augment_config, t->x, t->y));
        t->data_wait_seconds += monotonic_seconds() - began;
        *x = t->x;
        *y = t->y;
        return CX_OK;
    }
    int slot;
    CX_TRY(cx_prefetch_take(t->prefetch, &job, x, y, &slot));
    t->data_wait_seconds += monotonic_seconds() - began;
    if (t->batch_dev_x[0]) { /* uploaded on the copy stream: the step's stream waits for it */
        CX_TRY(t->dev->api->wait_copy(t->model->be, slot));
        *x = t->batch_dev_x[slot];
        *y = t->batch_dev_y[slot];
        *on_device = 1;
        t->batch_slot = slot; /* released once the forward and loss have copied it */
    }
    /* the next micro-batch of this epoch, built while this one trains */
    if (micro + 1 < t->cfg.accumulation_steps) {
        cx_batch_job next = batch_job(t, e, e->epoch_step, micro + 1);
        cx_prefetch_ask(t->prefetch, &next);
    } else if (e->epoch_step + 1 < t->steps_per_epoch) {
        cx_batch_job next = batch_job(t, e, e->epoch_step + 1, 0);
        cx_prefetch_ask(t->prefetch, &next);
    }
    return CX_OK;
}

cx_status cx_trainer_run_epoch(cx_trainer *t, const uint8_t *images, const uint8_t *masks,
                               int64_t n_images, int height, int width, double *step_loss,
                               double *step_lr, int64_t max_steps, int64_t *n_done) {
    cx_train_state *s = &t->state;
    *n_done = 0;
    if (!images || !masks)
        return cx_fail(CX_EINVAL, "training needs images and masks");
    if (n_images != t->n_train || height != t->height || width != t->width)
        return cx_fail(CX_EINVAL, "the training data is %lld images of %dx%d but the trainer "
                       "was made for %lld of %dx%d", (long long)n_images, height, width,
                       (long long)t->n_train, t->height, t->width);
    if (s->epoch >= t->cfg.epochs)
        return cx_fail(CX_EINVAL, "all %lld epochs of the run are done",
                       (long long)t->cfg.epochs);
    if (s->epoch_step < 0 || s->epoch_step >= t->steps_per_epoch ||
        s->step != s->epoch * t->steps_per_epoch + s->epoch_step)
        return cx_fail(CX_EINVAL, "inconsistent run position: step %lld, epoch %lld, epoch "
                       "step %lld with %lld steps per epoch", (long long)s->step,
                       (long long)s->epoch, (long long)s->epoch_step,
                       (long long)t->steps_per_epoch);
    if (t->perm_epoch != s->epoch) {
        if (t->prefetch) /* a job of the old order may still read it */
            cx_prefetch_settle(t->prefetch);
        cx_trainer_permutation(t->cfg.seed, (uint64_t)s->epoch, t->n_train, t->perm);
        t->perm_epoch = s->epoch;
    }
    epoch_batches e = {images, masks, s->epoch_step};
    while (e.epoch_step < t->steps_per_epoch && (max_steps < 0 || *n_done < max_steps)) {
        CX_TRY(step_with(t, epoch_next, &e));
        if (step_loss)
            step_loss[e.epoch_step] = t->last.loss;
        if (step_lr)
            step_lr[e.epoch_step] = t->last.lr[CX_GROUP_HEAD];
        e.epoch_step++;
        s->epoch_step = e.epoch_step;
        (*n_done)++;
        if (e.epoch_step < t->steps_per_epoch && t->interrupted &&
            t->interrupted(t->interrupt_ctx))
            return cx_fail(CX_ERUNTIME, "training interrupted after step %lld (epoch %lld, "
                           "step %lld of %lld)", (long long)s->step, (long long)s->epoch,
                           (long long)e.epoch_step, (long long)t->steps_per_epoch);
    }
    if (s->epoch_step == t->steps_per_epoch) {
        s->epoch++;
        s->epoch_step = 0;
    }
    return CX_OK;
}
