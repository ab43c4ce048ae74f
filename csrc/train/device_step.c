/* The trainer's optimizer state and step tail on a CUDA backend (see device_step.h). */
#include "device_step.h"

#include "../ops/cuda_loader.h"
#include "trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int cx_device_step_applies(const cx_backend *be) {
    return be && be->name && strcmp(be->name, "cuda") == 0;
}

void cx_device_step_free(cx_device_step *d) {
    if (!d)
        return;
    void *device[] = {d->exp_avg, d->exp_avg_sq, d->ema, d->steps, d->params, d->mask,
                      d->workspace};
    for (size_t i = 0; i < sizeof device / sizeof *device; i++)
        if (device[i])
            d->be->free(d->be, device[i]);
    free(d->mask_host);
    cx_aligned_free(d->staging);
    free(d);
}

/* The buffers of the optimizer ABI over the model's params and grads. */
static cu_optim_buffers buffers_of(const cx_device_step *d, float *params, const float *grads) {
    return (cu_optim_buffers){.count = d->count, .total = d->total, .params = d->params,
                              .values = params, .exp_avg = d->exp_avg,
                              .exp_avg_sq = d->exp_avg_sq, .ema = d->ema, .grads = grads,
                              .steps = d->steps, .workspace = d->workspace};
}

cx_status cx_device_step_create(cx_backend *be, const cx_param_table *table, const float *params,
                                cx_device_step **out) {
    *out = NULL;
    if (!cx_device_step_applies(be))
        return cx_fail(CX_EINVAL, "the device optimizer needs a CUDA backend, got '%s'",
                       be && be->name ? be->name : "(none)");
    const cx_cuda_api *api = NULL;
    CX_TRY(cx_cuda_load(&api));
    cx_device_step *d = calloc(1, sizeof *d);
    if (!d)
        return cx_fail(CX_ENOMEM, "out of memory creating the device optimizer");
    d->be = be;
    d->api = api;
    d->count = table->count;
    d->total = table->total;
    size_t floats = (d->total ? d->total : 1) * sizeof(float), count = d->count ? d->count : 1;
    d->exp_avg = be->alloc(be, floats);
    d->exp_avg_sq = d->exp_avg ? be->alloc(be, floats) : NULL;
    d->ema = d->exp_avg_sq ? be->alloc(be, floats) : NULL;
    d->steps = d->ema ? be->alloc(be, count * sizeof(int64_t)) : NULL;
    d->params = d->steps ? be->alloc(be, count * sizeof(cu_optim_param)) : NULL;
    d->mask = d->params ? be->alloc(be, count) : NULL;
    d->workspace = d->mask ? be->alloc(be, api->optim_workspace_bytes(d->count, d->total)) : NULL;
    d->mask_host = malloc(count);
    cu_optim_param *host = calloc(count, sizeof *host);
    if (!d->workspace || !d->mask_host || !host) {
        /* a failed be->alloc has set its own message (cudaMalloc's, with the free memory) */
        cx_status st = !d->workspace ? CX_ENOMEM
                                     : cx_fail(CX_ENOMEM, "out of host memory for the device "
                                               "optimizer");
        free(host);
        cx_device_step_free(d);
        return st;
    }
    for (int i = 0; i < d->count; i++) {
        const cx_param *p = &table->items[i];
        host[i] = (cu_optim_param){.offset = p->offset, .numel = p->numel, .group = p->group,
                                   .decay = p->decay};
    }
    api->copy_bytes(be, d->params, host, (size_t)d->count * sizeof *host, 1);
    cx_status st = cx_device_step_reset(d);
    if (st == CX_OK)
        st = cx_device_step_ema_init(d, params);
    if (st == CX_OK)
        st = be->sync(be);
    free(host);
    if (st != CX_OK) {
        cx_device_step_free(d);
        return st;
    }
    *out = d;
    return CX_OK;
}

cx_status cx_device_step_ema_init(cx_device_step *d, const float *params) {
    d->be->copy(d->be, d->ema, params, d->total);
    return CX_OK;
}

cx_status cx_device_step_reset(cx_device_step *d) {
    cu_optim_buffers b = buffers_of(d, NULL, NULL);
    /* reset reads no parameter or gradient, but the ABI's checks want the pointers */
    b.values = d->ema;
    b.grads = d->ema;
    return d->api->optim_reset(d->be, &b);
}

cx_status cx_device_step_run(cx_device_step *d, const unsigned char *mask, float unscale,
                             const cu_optim_config *config, float *params, float *grads,
                             double *norm, int *applied) {
    cx_backend *be = d->be;
    *norm = NAN;
    *applied = 0;
    if (unscale != 1.0f) /* x * unscale + (-0): the exact product, the sign of a zero kept */
        be->affine(be, d->total, unscale, -0.0f, grads, grads);
    if (!d->mask_valid || memcmp(d->mask_host, mask, (size_t)d->count) != 0) {
        memcpy(d->mask_host, mask, (size_t)d->count);
        d->api->copy_bytes(be, d->mask, d->mask_host, (size_t)d->count, 1);
        d->mask_valid = 1;
    }
    cu_optim_buffers b = buffers_of(d, params, grads);
    cx_status st = d->api->optim_step(be, &b, d->mask, config);
    cu_optim_result result;
    if (st == CX_OK)
        st = d->api->optim_read_result(be, &b, &result);
    if (st != CX_OK) {
        d->mask_valid = 0;
        be->sync(be); /* nothing stays pending (the error above is the one reported) */
        return st;
    }
    *norm = result.norm;
    *applied = result.applied;
    return CX_OK;
}

cx_status cx_device_step_download_steps(cx_device_step *d, int64_t *host) {
    d->api->copy_bytes(d->be, host, d->steps, (size_t)d->count * sizeof(int64_t), 0);
    return d->be->sync(d->be);
}

cx_status cx_device_step_download(cx_device_step *d, cx_train_state *host) {
    cx_backend *be = d->be;
    be->download(be, host->exp_avg, d->exp_avg, d->total);
    be->download(be, host->exp_avg_sq, d->exp_avg_sq, d->total);
    be->download(be, host->ema, d->ema, d->total);
    return cx_device_step_download_steps(d, host->param_steps);
}

cx_status cx_device_step_upload(cx_device_step *d, const cx_train_state *host) {
    cx_backend *be = d->be;
    be->upload(be, d->exp_avg, host->exp_avg, d->total);
    be->upload(be, d->exp_avg_sq, host->exp_avg_sq, d->total);
    be->upload(be, d->ema, host->ema, d->total);
    d->api->copy_bytes(be, d->steps, host->param_steps, (size_t)d->count * sizeof(int64_t), 1);
    return be->sync(be);
}

uint64_t cx_fnv1a_floats(uint64_t h, const float *values, size_t n) {
    const unsigned char *bytes = (const unsigned char *)values;
    for (size_t i = 0; i < n * sizeof(float); i++)
        h = (h ^ bytes[i]) * 0x100000001b3ull;
    return h;
}

cx_status cx_device_step_join(cx_device_step *d, cx_comm *comm, float *params,
                              size_t bucket_floats, uint64_t *hash) {
    cx_backend *be = d->be;
    int direct = cx_comm_device_buffers(comm); /* NCCL: no host copy, no staging buffer */
    size_t staging = bucket_floats < d->total ? bucket_floats : d->total;
    if (!direct && !d->staging) {
        d->staging = cx_aligned_alloc((staging ? staging : 1) * sizeof(float));
        if (!d->staging)
            return cx_fail(CX_ENOMEM, "out of host memory for the gradient staging buffer "
                           "(%zu floats)", staging);
        d->staging_floats = staging;
    }
    float *host = cx_aligned_alloc((d->total ? d->total : 1) * sizeof(float));
    if (!host)
        return cx_fail(CX_ENOMEM, "out of host memory for a copy of the %zu weights", d->total);
    cx_status st = be->sync(be); /* the weights' writers have finished */
    if (st == CX_OK && direct) {
        st = cx_comm_broadcast(comm, params, d->total * sizeof(float), 0);
        be->download(be, host, params, d->total); /* for the hash */
        if (st == CX_OK)
            st = be->sync(be);
    } else if (st == CX_OK) {
        be->download(be, host, params, d->total);
        st = be->sync(be);
        if (st == CX_OK)
            st = cx_comm_broadcast(comm, host, d->total * sizeof(float), 0);
        if (st == CX_OK) {
            be->upload(be, params, host, d->total);
            st = be->sync(be);
        }
    }
    *hash = cx_fnv1a_floats(CX_FNV_OFFSET, host, d->total);
    cx_aligned_free(host);
    return st;
}

cx_status cx_device_step_all_reduce_mean(cx_device_step *d, cx_comm *comm, float *grads,
                                         size_t n) {
    cx_backend *be = d->be;
    if (cx_comm_device_buffers(comm)) { /* in place on the device, once the backward is done */
        CX_TRY(be->sync(be));
        return cx_comm_all_reduce_mean(comm, grads, n);
    }
    if (n > d->staging_floats)
        return cx_fail(CX_EINVAL, "a gradient bucket of %zu floats exceeds the staging buffer "
                       "of %zu (join first)", n, d->staging_floats);
    be->download(be, d->staging, grads, n);
    CX_TRY(be->sync(be));
    CX_TRY(cx_comm_all_reduce_mean(comm, d->staging, n));
    /* the next bucket's download is queued behind this upload: staging is free again
     * when that download's wait returns */
    be->upload(be, grads, d->staging, n);
    return CX_OK;
}

float *cx_backend_host_copy(cx_backend *be, const float *src, size_t n) {
    float *host = cx_aligned_alloc((n ? n : 1) * sizeof(float));
    if (!host) {
        cx_fail(CX_ENOMEM, "out of host memory copying %zu floats from the device", n);
        return NULL;
    }
    be->download(be, host, src, n);
    if (be->sync(be) != CX_OK) {
        cx_aligned_free(host);
        return NULL;
    }
    return host;
}

/* ---- the trainer's state on the host (trainer.h) ---------------------------------------- */

cx_status cx_trainer_host_state(const cx_trainer *t, cx_train_state *host) {
    const cx_train_state *s = &t->state;
    const cx_param_table *table = &t->model->table;
    float *exp_avg = host->exp_avg, *exp_avg_sq = host->exp_avg_sq, *ema = host->ema;
    int64_t *steps = host->param_steps;
    *host = *s; /* the run position and scalars */
    host->exp_avg = exp_avg;
    host->exp_avg_sq = exp_avg_sq;
    host->ema = ema;
    host->param_steps = steps;
    if (t->dev)
        return cx_device_step_download(t->dev, host);
    memcpy(exp_avg, s->exp_avg, table->total * sizeof(float));
    memcpy(exp_avg_sq, s->exp_avg_sq, table->total * sizeof(float));
    memcpy(ema, s->ema, table->total * sizeof(float));
    memcpy(steps, s->param_steps, (size_t)table->count * sizeof(int64_t));
    return CX_OK;
}

cx_status cx_trainer_install_state(cx_trainer *t, cx_train_state *loaded) {
    /* the loss scale carries over between runs that both scale (fp16); a run that starts
     * scaling (a CPU or bf16 run resumed on an fp16 GPU) starts from loss_scale_init, and
     * one that stops keeps 1 */
    if (loaded->loss_scaling != t->cfg.loss_scaling) {
        loaded->loss_scale = t->cfg.loss_scaling ? t->cfg.loss_scale_init : 1.0;
        loaded->loss_scale_good_steps = 0;
        loaded->loss_scaling = t->cfg.loss_scaling;
    }
    if (!t->dev) {
        cx_train_state old = t->state;
        t->state = *loaded;
        *loaded = old;
        return CX_OK;
    }
    CX_TRY(cx_device_step_upload(t->dev, loaded));
    t->state = *loaded;
    t->state.exp_avg = t->state.exp_avg_sq = t->state.ema = NULL;
    t->state.param_steps = NULL;
    return CX_OK;
}
