/* Standalone EdgeNeXt backbone (see backbone.h). */
#include "backbone.h"

#include <stdlib.h>
#include <string.h>

static cx_status check_backend(cx_backbone *bb);

cx_status cx_backbone_create(const char *config_name, uint64_t seed, cx_backend *be,
                             cx_backbone **out) {
    *out = NULL;
    cx_edgenext_config cfg;
    CX_TRY(cx_edgenext_config_by_name(config_name, &cfg));
    cx_backbone *bb = cx_aligned_alloc(sizeof *bb);
    if (!bb)
        return cx_fail(CX_ENOMEM, "out of memory creating the backbone");
    memset(bb, 0, sizeof *bb);
    bb->be = be;
    cx_status st = cx_edgenext_declare(&bb->net, &cfg, &bb->table, "");
    if (st == CX_OK)
        st = check_backend(bb);
    if (st == CX_OK) {
        bb->params = be->alloc(be, bb->table.total * sizeof(float));
        bb->grads = be->alloc(be, bb->table.total * sizeof(float));
        if (!bb->params || !bb->grads)
            st = cx_fail(CX_ENOMEM, "cannot allocate %zu parameters", bb->table.total);
    }
    if (st != CX_OK) {
        cx_backbone_free(bb);
        return st;
    }
    /* parameters are initialised on the host, then uploaded */
    float *host = cx_aligned_alloc(bb->table.total * sizeof(float));
    if (!host) {
        cx_backbone_free(bb);
        return cx_fail(CX_ENOMEM, "out of memory initialising parameters");
    }
    cx_params_init(&bb->table, host, seed);
    be->upload(be, bb->params, host, bb->table.total);
    cx_aligned_free(host);
    be->zero(be, bb->grads, bb->table.total);
    st = be->sync(be);
    if (st != CX_OK) {
        cx_backbone_free(bb);
        return st;
    }
    *out = bb;
    return CX_OK;
}

void cx_backbone_free(cx_backbone *bb) {
    if (!bb)
        return;
    cx_arena_free(&bb->arena);
    if (bb->params)
        bb->be->free(bb->be, bb->params);
    if (bb->grads)
        bb->be->free(bb->be, bb->grads);
    cx_params_free(&bb->table);
    cx_aligned_free(bb);
}

/* Stands in for the parameter and gradient buffers while a plan runs before they exist
 * (the planning backend never reads or writes through them). */
static float plan_placeholder[16] __attribute__((aligned(64)));

/* Runs forward and backward on a planning backend that records the ops called (*used)
 * with a counting arena (counting->high_water: the activation memory). */
static cx_status plan_passes(cx_backbone *bb, int batch, int height, int width, cx_op_set *used,
                             cx_arena *counting) {
    cx_backend recorder;
    cx_backend_null_recording(&recorder, used);
    cx_exec ex = {.be = &recorder, .arena = counting,
                  .params = bb->params ? bb->params : plan_placeholder,
                  .grads = bb->grads ? bb->grads : plan_placeholder};
    size_t n_in = (size_t)batch * 3 * height * width;
    float *x, *dx, *dfeatures[4];
    CX_TAKE(&ex, x, n_in);
    CX_TRY(cx_edgenext_forward(&bb->net, &ex, x, batch, height, width, CX_EDGENEXT_KEEP_ALL));
    for (int s = 0; s < 4; s++)
        CX_TAKE(&ex, dfeatures[s], (size_t)batch * bb->net.cfg.dims[s] *
                                       (height >> (s + 2)) * (width >> (s + 2)));
    CX_TAKE(&ex, dx, n_in);
    return cx_edgenext_backward(&bb->net, &ex, dfeatures, dx);
}

/* Binding to a backend: every op of a forward and backward must be supported, checked
 * before any memory is allocated (a 64 x 64 plan lists them). */
static cx_status check_backend(cx_backbone *bb) {
    cx_op_set used = {{0}};
    cx_arena counting = {.planning = 1};
    CX_TRY(plan_passes(bb, 1, 64, 64, &used, &counting));
    return cx_backend_check_ops(bb->be, &used, "the backbone");
}

static cx_status plan(cx_backbone *bb, int batch, int height, int width) {
    cx_op_set used = {{0}};
    cx_arena counting = {.planning = 1};
    CX_TRY(plan_passes(bb, batch, height, width, &used, &counting));
    CX_TRY(cx_backend_check_ops(bb->be, &used, "the backbone"));
    CX_TRY(cx_arena_reserve(&bb->arena, bb->be, counting.high_water));
    bb->plan_batch = batch;
    bb->plan_height = height;
    bb->plan_width = width;
    return CX_OK;
}

cx_status cx_backbone_forward(cx_backbone *bb, const float *x_host, int batch, int height,
                              int width) {
    CX_TRY(cx_edgenext_check_input(&bb->net, batch, 3, height, width));
    bb->have_forward = 0;
    if (batch != bb->plan_batch || height != bb->plan_height || width != bb->plan_width)
        CX_TRY(plan(bb, batch, height, width));
    cx_backend *be = bb->be;
    cx_arena_release(&bb->arena, 0);
    cx_exec ex = {.be = be, .arena = &bb->arena, .params = bb->params, .grads = bb->grads};
    size_t n_in = (size_t)batch * 3 * height * width;
    CX_TAKE(&ex, bb->input, n_in);
    be->upload(be, bb->input, x_host, n_in);
    cx_status st = cx_edgenext_forward(&bb->net, &ex, bb->input, batch, height, width,
                                       CX_EDGENEXT_KEEP_ALL);
    bb->after_forward = bb->arena.used;
    CX_TRY(cx_exec_finish(be, st));
    bb->have_forward = 1;
    return CX_OK;
}

cx_status cx_backbone_backward(cx_backbone *bb, const float *const dfeatures_host[4],
                               float *dx_host) {
    if (!bb->have_forward)
        return cx_fail(CX_EINVAL, "backward() needs a forward() first");
    cx_backend *be = bb->be;
    cx_arena_release(&bb->arena, bb->after_forward);
    cx_exec ex = {.be = be, .arena = &bb->arena, .params = bb->params, .grads = bb->grads};
    const cx_edgenext *net = &bb->net;
    int batch = net->batch, height = net->height, width = net->width;
    float *dfeatures[4], *dx;
    for (int s = 0; s < 4; s++) {
        size_t n = (size_t)batch * net->cfg.dims[s] * (height >> (s + 2)) * (width >> (s + 2));
        CX_TAKE(&ex, dfeatures[s], n);
        be->upload(be, dfeatures[s], dfeatures_host[s], n);
    }
    size_t n_in = (size_t)batch * 3 * height * width;
    CX_TAKE_ZERO(&ex, dx, n_in);
    be->zero(be, bb->grads, bb->table.total);
    /* the features were in the arena region backward reused: forward again to read them */
    bb->have_forward = 0;
    cx_status st = cx_edgenext_backward(&bb->net, &ex, dfeatures, dx);
    if (st == CX_OK && dx_host)
        be->download(be, dx_host, dx, n_in);
    return cx_exec_finish(be, st);
}

size_t cx_backbone_arena_bytes(const cx_backbone *bb) { return bb->arena.capacity * sizeof(float); }
