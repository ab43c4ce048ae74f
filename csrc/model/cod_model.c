/* The whole COD model: parameters, plan, forward, loss, backward (see cod.h).
 *
 * Arena layout of a training step (stack order):
 *   forward   input, backbone activations (TRAIN: all; TRAIN_CHECKPOINT, TRAIN_HEAD and
 *             PREDICT: the four features only), neck and decoder activations, outputs
 *   loss      target, per-output loss values and saved weight maps / sums
 *   backward  d loss, d logits, d necks, d features, then per-part gradients released as
 *             each part finishes (experts, neck scales, backbone blocks); TRAIN_CHECKPOINT
 *             recomputes each backbone stage there, above d features, and releases it
 *             after the stage's backward, so the stages share that space
 * Forward activations survive backward, so backward may run again after one loss, and
 * the intermediates stay readable until the next forward. */
#include "cod.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- create / free -------------------------------------------------------------------- */

static cx_status check_config(const cx_cod_config *cfg, cx_edgenext_config *backbone) {
    CX_TRY(cx_edgenext_config_by_name(cfg->backbone, backbone));
    if (cfg->decoder_dim < 4 || cfg->decoder_dim > CX_COD_MAX_DECODER_DIM || cfg->decoder_dim % 4)
        return cx_fail(CX_EINVAL, "decoder_dim must be a multiple of 4 in 4..%d (4 attention "
                       "heads, D/4 context channels), got %d", CX_COD_MAX_DECODER_DIM,
                       cfg->decoder_dim);
    if (cfg->num_experts < 1 || cfg->num_experts > CX_COD_MAX_EXPERTS)
        return cx_fail(CX_EINVAL, "num_experts must be in [1, %d], got %d", CX_COD_MAX_EXPERTS,
                       cfg->num_experts);
    if (cfg->top_k < 0 || cfg->top_k > cfg->num_experts)
        return cx_fail(CX_EINVAL, "moe_top_k must be in [0, num_experts = %d] (0: dense), got %d",
                       cfg->num_experts, cfg->top_k);
    if (!isfinite(cfg->ds_weight) || !isfinite(cfg->balance_weight))
        return cx_fail(CX_EINVAL, "ds_weight and balance_weight must be finite, got %g and %g",
                       cfg->ds_weight, cfg->balance_weight);
    return CX_OK;
}

static cx_status declare(cx_cod_model *m, const cx_edgenext_config *backbone) {
    CX_TRY(cx_edgenext_declare(&m->backbone, backbone, &m->table, "backbone."));
    m->backbone_floats = m->table.total;
    for (int i = 0; i < 4; i++) {
        m->neck_start[i] = m->table.total;
        CX_TRY(cx_cod_neck_declare(&m->neck[i], i, backbone->dims[i], m->cfg.decoder_dim,
                                   m->cfg.num_experts, m->cfg.top_k, &m->table));
    }
    m->decoder_start = m->table.total;
    return cx_cod_decoder_declare(&m->decoder, m->cfg.decoder_dim, &m->table);
}

static cx_status check_backend(cx_cod_model *m);

cx_status cx_cod_create(const cx_cod_config *cfg, uint64_t seed, cx_backend *be,
                        cx_cod_model **out) {
    *out = NULL;
    cx_edgenext_config backbone;
    CX_TRY(check_config(cfg, &backbone));
    cx_cod_model *m = cx_aligned_alloc(sizeof *m);
    if (!m)
        return cx_fail(CX_ENOMEM, "out of memory creating the COD model");
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->be = be;
    cx_status st = declare(m, &backbone);
    if (st == CX_OK)
        st = check_backend(m);
    if (st == CX_OK) {
        m->params = be->alloc(be, m->table.total * sizeof(float));
        m->grads = be->alloc(be, m->table.total * sizeof(float));
        if (!m->params || !m->grads)
            st = cx_fail(CX_ENOMEM, "cannot allocate %zu parameters", m->table.total);
    }
    float *host = st == CX_OK ? cx_aligned_alloc(m->table.total * sizeof(float)) : NULL;
    if (st == CX_OK && !host)
        st = cx_fail(CX_ENOMEM, "out of memory initialising parameters");
    if (st != CX_OK) {
        cx_cod_free(m);
        return st;
    }
    cx_params_init(&m->table, host, seed);
    for (int i = 0; i < 4; i++)
        cx_cod_neck_init_edges(&m->neck[i], host);
    be->upload(be, m->params, host, m->table.total);
    cx_aligned_free(host);
    be->zero(be, m->grads, m->table.total);
    st = be->sync(be);
    if (st != CX_OK) {
        cx_cod_free(m);
        return st;
    }
    *out = m;
    return CX_OK;
}

void cx_cod_free(cx_cod_model *m) {
    if (!m)
        return;
    cx_arena_free(&m->arena);
    if (m->params)
        m->be->free(m->be, m->params);
    if (m->grads)
        m->be->free(m->be, m->grads);
    cx_params_free(&m->table);
    cx_aligned_free(m->routing_memory);
    cx_aligned_free(m->parts_memory);
    cx_aligned_free(m);
}

void cx_cod_zero_grads(cx_cod_model *m) { m->be->zero(m->be, m->grads, m->table.total); }

size_t cx_cod_arena_bytes(const cx_cod_model *m) { return m->arena.capacity * sizeof(float); }

/* Host buffers sized by the batch: routing (sparse mode) and loss parts. */
static cx_status host_buffers(cx_cod_model *m, int B) {
    if (B <= m->routing_capacity)
        return CX_OK;
    int E = m->cfg.num_experts, k = m->cfg.top_k;
    /* per neck: rows, chosen (int); probs, transfer (float); weights, dweights (double) */
    size_t per_neck = (size_t)B * (E * sizeof(int) + k * sizeof(int) + 2 * E * sizeof(float) +
                                   2 * E * sizeof(double));
    /* wbce, wiou [4][B]; staging: the four outputs' loss values and sums (20B floats in 10B
     * doubles, read back with one wait) */
    size_t n_parts = (size_t)8 * B + (size_t)10 * B;
    /* each neck's block starts 16-byte aligned (its doubles first): k ints may leave the
     * end of the previous block at any multiple of 4 */
    per_neck = (per_neck + 15) & ~(size_t)15;
    void *routing = cx_aligned_alloc(4 * per_neck);
    double *parts = cx_aligned_alloc(n_parts * sizeof(double));
    if (!routing || !parts) {
        cx_aligned_free(routing);
        cx_aligned_free(parts);
        return cx_fail(CX_ENOMEM, "out of memory for the host buffers of batch %d", B);
    }
    cx_aligned_free(m->routing_memory);
    cx_aligned_free(m->parts_memory);
    m->routing_memory = routing;
    m->parts_memory = parts;
    m->routing_capacity = B;
    for (int i = 0; i < 4; i++) {
        char *p = (char *)routing + (size_t)i * per_neck;
        cx_cod_neck *neck = &m->neck[i];
        neck->weights_host = (double *)p;
        p += (size_t)B * E * sizeof(double);
        neck->dweights_host = (double *)p;
        p += (size_t)B * E * sizeof(double);
        neck->probs_host = (float *)p;
        p += (size_t)B * E * sizeof(float);
        neck->transfer_host = (float *)p;
        p += (size_t)B * E * sizeof(float);
        neck->rows = (int *)p;
        p += (size_t)B * E * sizeof(int);
        neck->chosen = (int *)p;
        p += (size_t)B * k * sizeof(int);
    }
    for (int k4 = 0; k4 < 4; k4++) {
        m->parts.wbce[k4] = parts + (size_t)(2 * k4) * B;
        m->parts.wiou[k4] = parts + (size_t)(2 * k4 + 1) * B;
    }
    return CX_OK;
}

/* The loss's staging area: after wbce and wiou, which host_buffers laid out for the
 * capacity's batch (a later, smaller batch must not stage into them: it did, and a run whose
 * micro-batch shrank after a larger one read its loss parts overwritten). */
static float *loss_staging(const cx_cod_model *m) {
    return (float *)(m->parts_memory + (size_t)8 * m->routing_capacity);
}

/* ---- the passes (run against the real backend, or the null one while planning) -------- */

/* x: host memory, or (x_on_device) the backend's memory, copied on its stream. */
static cx_status forward_pass(cx_cod_model *m, cx_exec *ex, const float *x, int x_on_device,
                              int B, int H, int W, int mode) {
    cx_backend *be = ex->be;
    size_t n_in = (size_t)B * 3 * H * W;
    CX_TAKE(ex, m->input, n_in);
    if (x_on_device)
        be->copy(be, m->input, x, n_in);
    else
        be->upload(be, m->input, x, n_in);
    cx_edgenext_keep keep = mode == CX_COD_TRAIN              ? CX_EDGENEXT_KEEP_ALL
                            : mode == CX_COD_TRAIN_CHECKPOINT ? CX_EDGENEXT_RECOMPUTE
                                                              : CX_EDGENEXT_NO_BACKWARD;
    CX_TRY(cx_edgenext_forward(&m->backbone, ex, m->input, B, H, W, keep));
    float *necks[4];
    int h[4], w[4];
    for (int i = 0; i < 4; i++) {
        h[i] = cx_edgenext_stage_h(&m->backbone, i);
        w[i] = cx_edgenext_stage_w(&m->backbone, i);
        CX_TRY(cx_cod_neck_forward(&m->neck[i], ex, m->backbone.features[i], B, h[i], w[i]));
        necks[i] = m->neck[i].out;
    }
    CX_TRY(cx_cod_decoder_forward(&m->decoder, ex, necks, B, h, w));
    for (int k = 0; k < 4; k++) {
        m->outputs[k] = NULL;
        if (mode == CX_COD_PREDICT && k > 0)
            continue;
        CX_TAKE(ex, m->outputs[k], (size_t)B * H * W);
        cx_pool_shape up = {.planes = B, .in_h = h[k], .in_w = w[k], .out_h = H, .out_w = W};
        be->resize_bilinear_forward(be, &up, m->decoder.logits[k], m->outputs[k]);
    }
    return CX_OK;
}

static double output_weight(const cx_cod_model *m, int k) {
    return k == 0 ? 1.0 : (double)m->cfg.ds_weight;
}

static double routing_balance(const cx_cod_model *m) {
    double balance = 0.0;
    if (m->cfg.top_k > 0)
        for (int i = 0; i < 4; i++)
            balance += m->neck[i].balance;
    return balance;
}

/* m->parts from a loss record (cx_cod_loss_record_floats: per output k, the B losses, then
 * per image the sums sum(w), sum(w bce), sum(w p y), sum(w (p + y))) and the routing
 * balance of the same forward. */
static void parts_from_record(cx_cod_model *m, const float *record, int B, double balance) {
    cx_cod_loss_parts *parts = &m->parts;
    parts->total = 0.0;
    for (int k = 0; k < 4; k++) {
        const float *out = record + (size_t)5 * B * k;
        double mean = 0.0;
        for (int b = 0; b < B; b++) {
            const float *sums = out + B + 4 * b;
            double inter = sums[2], union_ = sums[3];
            parts->wbce[k][b] = (double)sums[1] / (double)sums[0];
            parts->wiou[k][b] = 1.0 - (inter + 1.0) / (union_ - inter + 1.0);
            mean += (double)out[b];
        }
        parts->loss[k] = mean / B;
        parts->total += output_weight(m, k) * parts->loss[k];
    }
    parts->balance = balance;
    if (m->cfg.top_k > 0)
        parts->total += (double)m->cfg.balance_weight * balance;
}

/* record NULL: reads the loss back into m->parts (one wait). Else queues the read-back
 * into record [cx_cod_loss_record_floats(B)] and returns without waiting. */
static cx_status loss_pass(cx_cod_model *m, cx_exec *ex, const float *y, int y_on_device,
                          float *record) {
    cx_backend *be = ex->be;
    int B = m->batch, H = m->height, W = m->width;
    size_t plane = (size_t)H * W;
    CX_TAKE(ex, m->target, (size_t)B * plane);
    if (y_on_device)
        be->copy(be, m->target, y, (size_t)B * plane);
    else
        be->upload(be, m->target, y, (size_t)B * plane);
    for (int k = 0; k < 4; k++) {
        CX_TAKE(ex, m->loss_values[k], (size_t)B);
        CX_TAKE(ex, m->loss_saved[k], cx_structure_loss_saved_floats(B, H, W));
        be->structure_loss_forward(be, B, H, W, m->outputs[k], m->target, m->loss_values[k],
                                   m->loss_saved[k]);
    }
    if (ex->arena->planning)
        return CX_OK;
    /* all four outputs' values and sums in one read-back */
    float *out = record ? record : loss_staging(m);
    for (int k = 0; k < 4; k++) {
        float *at = out + (size_t)5 * B * k;
        be->download(be, at, m->loss_values[k], (size_t)B);
        be->download(be, at + B, m->loss_saved[k] + (size_t)B * plane, (size_t)4 * B);
    }
    if (record)
        return CX_OK;
    CX_TRY(be->sync(be));
    parts_from_record(m, out, B, routing_balance(m));
    return CX_OK;
}

static cx_status backward_pass(cx_cod_model *m, cx_exec *ex, float loss_scale,
                               int train_backbone) {
    cx_backend *be = ex->be;
    int B = m->batch, H = m->height, W = m->width;
    size_t plane = (size_t)H * W;
    float *dloss, *dlogits[4], *dnecks[4], *dfeatures[4];
    CX_TAKE(ex, dloss, (size_t)4 * B);
    /* d total / d loss_k[b], made on the device (0 * 0 + c = c): no upload from pageable
     * memory, which may wait for the stream on a GPU */
    be->zero(be, dloss, (size_t)4 * B);
    for (int k = 0; k < 4; k++)
        be->affine(be, (size_t)B, 0.0f, (float)(loss_scale * output_weight(m, k) / B),
                   dloss + (size_t)k * B, dloss + (size_t)k * B);
    const cx_cod_decoder *dec = &m->decoder;
    for (int k = 0; k < 4; k++)
        CX_TAKE_ZERO(ex, dlogits[k], (size_t)B * dec->h[k] * dec->w[k]);
    size_t mark = cx_arena_mark(ex->arena);
    float *doutput;
    CX_TAKE(ex, doutput, (size_t)B * plane);
    for (int k = 0; k < 4; k++) {
        be->zero(be, doutput, (size_t)B * plane);
        be->structure_loss_backward(be, B, H, W, m->outputs[k], m->target, m->loss_saved[k],
                                    dloss + (size_t)k * B, doutput);
        cx_pool_shape up = {.planes = B, .in_h = dec->h[k], .in_w = dec->w[k], .out_h = H,
                            .out_w = W};
        be->resize_bilinear_backward(be, &up, doutput, dlogits[k]);
    }
    cx_arena_release(ex->arena, mark);
    for (int i = 0; i < 4; i++)
        CX_TAKE_ZERO(ex, dnecks[i], (size_t)B * m->cfg.decoder_dim * dec->h[i] * dec->w[i]);
    mark = cx_arena_mark(ex->arena);
    CX_TRY(cx_cod_decoder_backward(&m->decoder, ex, dlogits, dnecks));
    cx_exec_grads_final(ex, m->decoder_start);
    cx_arena_release(ex->arena, mark);
    for (int i = 0; i < 4; i++) {
        dfeatures[i] = NULL;
        if (train_backbone)
            CX_TAKE_ZERO(ex, dfeatures[i], (size_t)B * m->backbone.cfg.dims[i] * dec->h[i] *
                                               dec->w[i]);
    }
    double dbalance = (double)loss_scale * m->cfg.balance_weight;
    for (int i = 3; i >= 0; i--) {
        mark = cx_arena_mark(ex->arena);
        CX_TRY(cx_cod_neck_backward(&m->neck[i], ex, dnecks[i], dbalance, dfeatures[i]));
        cx_exec_grads_final(ex, m->neck_start[i]);
        cx_arena_release(ex->arena, mark);
    }
    if (train_backbone)
        CX_TRY(cx_edgenext_backward(&m->backbone, ex, dfeatures, NULL));
    return CX_OK;
}

/* Stands in for the parameter and gradient buffers while a plan runs before they exist
 * (the planning backend never reads or writes through them). */
static float plan_placeholder[16] __attribute__((aligned(64)));

/* Runs the passes for (B, H, W, mode) on a planning backend that records the ops called:
 * *used gets them, counting->high_water the activation memory. */
static cx_status plan_passes(cx_cod_model *m, int B, int H, int W, int mode, cx_op_set *used,
                             cx_arena *counting) {
    CX_TRY(host_buffers(m, B));
    cx_backend recorder;
    cx_backend_null_recording(&recorder, used);
    cx_exec ex = {.be = &recorder, .arena = counting,
                  .params = m->params ? m->params : plan_placeholder,
                  .grads = m->grads ? m->grads : plan_placeholder};
    m->batch = B;
    m->height = H;
    m->width = W;
    cx_status st = forward_pass(m, &ex, NULL, 0, B, H, W, mode);
    if (st == CX_OK && cx_cod_mode_trains(mode))
        st = loss_pass(m, &ex, NULL, 0, NULL);
    if (st == CX_OK && cx_cod_mode_trains(mode))
        st = backward_pass(m, &ex, 1.0f, mode != CX_COD_TRAIN_HEAD);
    m->have_forward = m->have_loss = 0;
    return st;
}

/* Binding to a backend: every op a training step calls must be supported, checked before
 * any memory is allocated (a 64 x 64 training plan lists them). */
static cx_status check_backend(cx_cod_model *m) {
    cx_op_set used = {{0}};
    cx_arena counting = {.planning = 1};
    CX_TRY(plan_passes(m, 1, 64, 64, CX_COD_TRAIN, &used, &counting));
    return cx_backend_check_ops(m->be, &used, "the COD model");
}

/* Sizes the arena for (B, H, W, mode) by running the passes on the planning backend. */
static cx_status plan(cx_cod_model *m, int B, int H, int W, int mode) {
    cx_op_set used = {{0}};
    cx_arena counting = {.planning = 1};
    m->plan_batch = 0; /* until the reserve succeeds */
    CX_TRY(plan_passes(m, B, H, W, mode, &used, &counting));
    CX_TRY(cx_backend_check_ops(m->be, &used, "the COD model"));
    CX_TRY(cx_arena_reserve(&m->arena, m->be, counting.high_water));
    m->plan_batch = B;
    m->plan_height = H;
    m->plan_width = W;
    m->plan_mode = mode;
    return CX_OK;
}

/* ---- public steps ---------------------------------------------------------------------- */

static cx_status check_shape(const cx_cod_model *m, int batch, int height, int width,
                             int mode) {
    CX_TRY(cx_edgenext_check_input(&m->backbone, batch, 3, height, width));
    /* bounds that keep the int products of the plan (rows = n x h x w of a scale, at most
     * B H W / 16) defined; element counts are computed in size_t */
    if (height > CX_COD_MAX_SIDE || width > CX_COD_MAX_SIDE ||
        (int64_t)batch * height * width > (int64_t)INT_MAX)
        return cx_fail(CX_EINVAL, "input of %d images of %dx%d exceeds the model's limits (sides "
                       "<= %d, batch x height x width <= %d)", batch, height, width,
                       CX_COD_MAX_SIDE, INT_MAX);
    if (mode != CX_COD_PREDICT && !cx_cod_mode_trains(mode))
        return cx_fail(CX_EINVAL, "unknown forward mode %d", mode);
    return CX_OK;
}

cx_status cx_cod_plan_bytes(cx_cod_model *m, int batch, int height, int width, int mode,
                            size_t *bytes) {
    *bytes = 0;
    CX_TRY(check_shape(m, batch, height, width, mode));
    cx_op_set used = {{0}};
    cx_arena counting = {.planning = 1};
    CX_TRY(plan_passes(m, batch, height, width, mode, &used, &counting));
    *bytes = counting.high_water * sizeof(float);
    return CX_OK;
}

static cx_status forward(cx_cod_model *m, const float *x, int x_on_device, int batch,
                         int height, int width, int mode, int queued) {
    CX_TRY(check_shape(m, batch, height, width, mode));
    m->have_forward = m->have_loss = 0;
    if (batch != m->plan_batch || height != m->plan_height || width != m->plan_width ||
        mode != m->plan_mode) /* a plan is cheap: the passes on the planning backend */
        CX_TRY(plan(m, batch, height, width, mode));
    m->batch = batch;
    m->height = height;
    m->width = width;
    m->mode = mode;
    cx_arena_release(&m->arena, 0);
    cx_exec ex = {.be = m->be, .arena = &m->arena, .params = m->params, .grads = m->grads};
    cx_status st = forward_pass(m, &ex, x, x_on_device, batch, height, width, mode);
    m->after_forward = m->arena.used;
    CX_TRY(queued ? cx_exec_check(m->be, st) : cx_exec_finish(m->be, st));
    m->have_forward = 1;
    return CX_OK;
}

cx_status cx_cod_forward(cx_cod_model *m, const float *x_host, int batch, int height,
                         int width, int mode) {
    return forward(m, x_host, 0, batch, height, width, mode, 0);
}

cx_status cx_cod_forward_device(cx_cod_model *m, const float *x_device, int batch, int height,
                                int width, int mode) {
    return forward(m, x_device, 1, batch, height, width, mode, 0);
}

cx_status cx_cod_forward_queued(cx_cod_model *m, const float *x, int x_on_device, int batch,
                                int height, int width, int mode) {
    return forward(m, x, x_on_device, batch, height, width, mode, 1);
}

static cx_status loss(cx_cod_model *m, const float *y, int y_on_device,
                      cx_cod_loss_parts *parts, float *record) {
    if (!m->have_forward || !cx_cod_mode_trains(m->mode))
        return cx_fail(CX_ERUNTIME, "loss() needs a training-mode forward() first");
    m->have_loss = 0;
    cx_arena_release(&m->arena, m->after_forward);
    cx_exec ex = {.be = m->be, .arena = &m->arena, .params = m->params, .grads = m->grads};
    /* without a record, loss_pass waits for its read-back (and reports what the queue
     * recorded) itself */
    CX_TRY(cx_exec_check(m->be, loss_pass(m, &ex, y, y_on_device, record)));
    m->after_loss = m->arena.used;
    m->have_loss = 1;
    if (parts && !record)
        *parts = m->parts;
    return CX_OK;
}

cx_status cx_cod_loss(cx_cod_model *m, const float *y_host, cx_cod_loss_parts *parts) {
    return loss(m, y_host, 0, parts, NULL);
}

cx_status cx_cod_loss_device(cx_cod_model *m, const float *y_device, cx_cod_loss_parts *parts) {
    return loss(m, y_device, 1, parts, NULL);
}

cx_status cx_cod_loss_queued(cx_cod_model *m, const float *y, int y_on_device, float *record,
                             double *balance) {
    CX_TRY(loss(m, y, y_on_device, NULL, record));
    *balance = routing_balance(m);
    return CX_OK;
}

void cx_cod_loss_parts_from(cx_cod_model *m, const float *record, int batch, double balance,
                            cx_cod_loss_parts *parts) {
    parts_from_record(m, record, batch, balance);
    if (parts)
        *parts = m->parts;
}

static cx_status backward(cx_cod_model *m, float loss_scale, int train_backbone, int queued) {
    if (!m->have_loss)
        return cx_fail(CX_ERUNTIME, "backward() needs forward() and loss() first");
    if (train_backbone && m->mode == CX_COD_TRAIN_HEAD)
        return cx_fail(CX_ERUNTIME, "backward() through the backbone after a frozen-backbone "
                       "forward (mode train_head keeps no backbone activations): pass "
                       "train_backbone 0, or forward in mode train or train_checkpoint");
    cx_arena_release(&m->arena, m->after_loss);
    cx_exec ex = {.be = m->be, .arena = &m->arena, .params = m->params, .grads = m->grads,
                  .grads_final = m->grads_final, .grads_final_ctx = m->grads_final_ctx};
    cx_status st = backward_pass(m, &ex, loss_scale, train_backbone);
    return queued ? cx_exec_check(m->be, st) : cx_exec_finish(m->be, st);
}

cx_status cx_cod_backward(cx_cod_model *m, float loss_scale, int train_backbone) {
    return backward(m, loss_scale, train_backbone, 0);
}

cx_status cx_cod_backward_queued(cx_cod_model *m, float loss_scale, int train_backbone) {
    return backward(m, loss_scale, train_backbone, 1);
}

void cx_cod_set_grads_final(cx_cod_model *m, cx_grads_final_fn fn, void *ctx) {
    m->grads_final = fn;
    m->grads_final_ctx = ctx;
}

cx_status cx_cod_probabilities(cx_cod_model *m, float *probs_host) {
    if (!m->have_forward)
        return cx_fail(CX_ERUNTIME, "probabilities need a forward() first");
    size_t n = (size_t)m->batch * m->height * m->width;
    m->be->download(m->be, probs_host, m->outputs[0], n);
    CX_TRY(m->be->sync(m->be));
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        double x = probs_host[i];
        if (!isfinite(x) && bad++ == 0)
            first = i;
        probs_host[i] = (float)(x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)));
    }
    if (bad) /* sigmoid would hide an infinite logit as 0 or 1 and NaN would read as 0 */
        return cx_fail(CX_ERUNTIME, "the model's output is not finite (%zu of %zu prediction "
                       "values, first in image %zu): the forward overflowed float32 (weights "
                       "far too large?)", bad, n, first / ((size_t)m->height * m->width));
    return CX_OK;
}
