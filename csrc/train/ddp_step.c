/* The data-parallel part of a step (trainer.h, "Data parallelism"): joining the ranks,
 * and averaging the step's gradients and loss over them, with the gradient buckets
 * launched while the last micro-batch's backward runs (buckets.h) where the memory allows. */
#include "trainer.h"

#include <stdio.h>

/* The bucket size of this run, in floats. */
static size_t bucket_floats(const cx_trainer *t) {
    return (size_t)(t->cfg.bucket_floats > 0 ? t->cfg.bucket_floats : CX_DDP_BUCKET_FLOATS);
}

/* FNV-1a over the bytes of the weights: equal weights on every rank, checked cheaply. */
cx_status cx_trainer_set_comm(cx_trainer *t, cx_comm *comm) {
    if (!comm)
        return cx_fail(CX_EINVAL, "set_comm needs a communicator");
    if (comm->world != t->cfg.world_size || comm->rank != t->cfg.rank)
        return cx_fail(CX_EINVAL, "the communicator is rank %d of %d but the trainer was made "
                       "for rank %d of world_size %d", comm->rank, comm->world, t->cfg.rank,
                       t->cfg.world_size);
    if (!t->dev && cx_comm_device_buffers(comm))
        return cx_fail(CX_EINVAL, "the '%s' communicator takes device memory, but this trainer's "
                       "model is on the CPU (CPU ranks use the shared-memory communicator)",
                       comm->ops->name);
    cx_cod_model *m = t->model;
    size_t total = m->table.total;
    uint64_t mine;
    if (t->dev) { /* device weights: directly or through a host copy (device_step.h) */
        CX_TRY(cx_device_step_join(t->dev, comm, m->params, bucket_floats(t), &mine));
    } else {
        CX_TRY(cx_comm_broadcast(comm, m->params, total * sizeof(float), 0));
        mine = cx_fnv1a_floats(CX_FNV_OFFSET, m->params, total);
    }
    uint64_t root = mine;
    CX_TRY(cx_comm_host_broadcast(comm, &root, sizeof root, 0));
    if (mine != root) {
        cx_fail(CX_ERUNTIME, "rank %d: the weights differ from rank 0's after the broadcast",
                comm->rank);
        cx_comm_abort(comm, cx_last_error());
        return CX_ERUNTIME;
    }
    if (t->state.step == 0 && t->dev)
        CX_TRY(cx_device_step_ema_init(t->dev, m->params));
    else if (t->state.step == 0)
        cx_ema_init(&m->table, m->params, t->state.ema);
    /* overlap: host gradients, or device gradients over a device-memory communicator */
    cx_buckets_free(t->buckets);
    t->buckets = NULL;
    if (t->cfg.overlap_comm && (!t->dev || cx_comm_device_buffers(comm))) {
        cx_buckets_config bc = {.comm = comm, .grads = m->grads,
                                .bucket_floats = bucket_floats(t),
                                .be = t->dev ? m->be : NULL, .api = t->dev ? t->dev->api : NULL};
        CX_TRY(cx_buckets_create(&bc, &t->buckets));
    }
    t->comm = comm;
    return CX_OK;
}

/* The trained parameters' span [*begin, *end): the same on every rank (the stage mask). */
static void trained_span(const cx_trainer *t, size_t *begin, size_t *end) {
    const cx_param_table *table = &t->model->table;
    *begin = table->total;
    *end = 0;
    for (int i = 0; i < table->count; i++)
        if (t->mask[i]) {
            const cx_param *p = &table->items[i];
            *begin = p->offset < *begin ? p->offset : *begin;
            *end = p->offset + p->numel > *end ? p->offset + p->numel : *end;
        }
}

void cx_trainer_ddp_backward_begins(cx_trainer *t) {
    if (!t->comm || !t->buckets)
        return;
    size_t begin, end;
    trained_span(t, &begin, &end);
    cx_buckets_begin(t->buckets, begin, end);
    t->buckets_begun = 1;
    cx_cod_set_grads_final(t->model, cx_buckets_grads_final, t->buckets);
}

void cx_trainer_ddp_backward_ends(cx_trainer *t) {
    cx_cod_set_grads_final(t->model, NULL, NULL);
}

cx_status cx_trainer_ddp_step_failed(cx_trainer *t, cx_status failure) {
    cx_trainer_ddp_backward_ends(t);
    if (!t->buckets || !t->buckets_begun)
        return failure;
    t->buckets_begun = 0;
    /* the comm thread must let go of the communicator (aborted: the rest fails at once);
     * the step's own error stays the one reported */
    char message[1024];
    snprintf(message, sizeof message, "%s", cx_last_error());
    cx_buckets_finish(t->buckets);
    return cx_fail(failure, "%s", message);
}

/* Averages the step's gradients (and loss) over the ranks, then in sparse mode unites the
 * experts routed to, so every rank applies the same optimizer mask. The gradients go
 * through the communicator's own memory (device_step.c decides for device models), in
 * buckets from the end, most of them already averaged by the communication thread while
 * the backward ran (t->buckets); the expert flags and the loss with the out-of-memory
 * count are host values on the host route (comm.h). */
cx_status cx_trainer_ddp_reduce(cx_trainer *t, int sparse, double *loss_sum, int *oom_ranks) {
    cx_comm *comm = t->comm;
    if (t->buckets) { /* started in the last backward (or, after a failed one, all now) */
        if (!t->buckets_begun)
            cx_trainer_ddp_backward_begins(t);
        cx_trainer_ddp_backward_ends(t);
        t->buckets_begun = 0;
        CX_TRY(cx_buckets_finish(t->buckets));
        t->overlapped_buckets += cx_buckets_early(t->buckets);
    } else {
        size_t begin, end;
        trained_span(t, &begin, &end);
        for (size_t hi = end; hi > begin;) { /* buckets from the end: backward's order */
            size_t lo = hi - begin > bucket_floats(t) ? hi - bucket_floats(t) : begin;
            CX_TRY(t->dev ? cx_device_step_all_reduce_mean(t->dev, comm, t->model->grads + lo,
                                                           hi - lo)
                          : cx_comm_all_reduce_mean(comm, t->model->grads + lo, hi - lo));
            hi = lo;
        }
    }
    if (sparse) {
        float used[4 * CX_COD_MAX_EXPERTS];
        for (int i = 0; i < 4 * CX_COD_MAX_EXPERTS; i++)
            used[i] = t->used[i / CX_COD_MAX_EXPERTS][i % CX_COD_MAX_EXPERTS];
        CX_TRY(cx_comm_host_all_reduce_sum(comm, used, 4 * CX_COD_MAX_EXPERTS));
        for (int i = 0; i < 4 * CX_COD_MAX_EXPERTS; i++)
            t->used[i / CX_COD_MAX_EXPERTS][i % CX_COD_MAX_EXPERTS] = used[i] > 0.0f;
    }
    /* the loss's mean, and (summed) the ranks that ran out of memory in this step */
    float loss_and_oom[2] = {(float)*loss_sum, (float)*oom_ranks};
    CX_TRY(cx_comm_host_all_reduce_sum(comm, loss_and_oom, 2)); /* host values, any backend */
    *loss_sum = loss_and_oom[0] * (1.0f / (float)comm->world);
    *oom_ranks = (int)loss_and_oom[1];
    return CX_OK;
}

