/* The seven neck experts (see cod.h and tools/cod_twin.py, interpretation 6). Each maps
 * z [n, D, h, w] -> [n, D, h, w] and works per image, so running it on a gathered
 * sub-batch equals running it on all images and keeping those rows.
 *
 *   texture   gelu(norm(pw(dw.0(z) + dw.1(z) + dw.2(z) + dw.3(z)))), dilations 1, 2, 4, 8
 *   local     gelu(norm(pw(dw(z)))), depthwise 7x7
 *   edge      gelu(norm(pw(edge(z)))), grouped 3x3 D -> 3D (Sobel-x, Sobel-y, Laplacian init)
 *   frequency gelu(norm(pw(cat[a3, a7 - a3, z - a7]))), a_k = avgpool_k(z) (no pad count)
 *   contrast  y = pw(cat[z - a3, z - a9]); y * sigmoid(fc2(gelu(fc1(GAP(y)))))
 *   context   gelu(norm(pw(cat[z, up(pools.0(ap1(z))), up(pools.1(ap2(z))), up(pools.2(ap4(z)))])))
 *   attention transpose back(proj(XCA(qkv(LayerNorm(tokens(z)))))), 4 heads
 *
 * Forward keeps what backward reads in the expert struct; short-lived temporaries are
 * taken after a mark and released. Backward takes its gradients from the arena; the
 * caller releases them when the expert is done. */
#include "cod.h"

#include <limits.h>
#include <stdio.h>

#define P(off) (ex->params + (off))
#define G(off) (ex->grads ? ex->grads + (off) : NULL)

/* ---- parameter helpers (shared with the neck and decoder) --------------------------- */

static cx_status add_param(cx_param_table *table, const char *prefix, const char *leaf,
                           const char *suffix, int ndim, const int64_t *shape, int decay,
                           cx_init_kind init, int fan_in, size_t *offset) {
    char name[CX_PARAM_NAME_MAX];
    int len = snprintf(name, sizeof name, "%s%s", leaf, suffix);
    if (len < 0 || (size_t)len >= sizeof name)
        return cx_fail(CX_EINVAL, "parameter name too long: %s%s%s", prefix, leaf, suffix);
    CX_TRY(cx_params_add(table, prefix, name, ndim, shape, decay, init, 0.0f, fan_in, offset));
    table->items[table->count - 1].group = 1; /* not the backbone */
    return CX_OK;
}

cx_status cx_cod_add_layer(cx_param_table *table, const char *prefix, const char *leaf,
                           int out_ch, int in_per_group, int k, cx_wb *wb) {
    /* every factor bounded first, the fan-in computed in 64 bits and checked to fit */
    if (out_ch < 1 || out_ch > CX_COD_MAX_CHANNELS || in_per_group < 1 ||
        in_per_group > CX_COD_MAX_CHANNELS || k < 0 || k > 15)
        return cx_fail(CX_EINVAL, "%s%s: layer of %d outputs, %d inputs per group, kernel %d is "
                       "outside 1..%d channels and kernel 0..15", prefix, leaf, out_ch,
                       in_per_group, k, CX_COD_MAX_CHANNELS);
    int64_t shape[4] = {out_ch, in_per_group, k, k};
    int64_t fan_in64 = (int64_t)in_per_group * (k > 0 ? (int64_t)k * k : 1);
    if (fan_in64 > INT_MAX)
        return cx_fail(CX_EINVAL, "%s%s: fan-in %lld too large", prefix, leaf, (long long)fan_in64);
    int fan_in = (int)fan_in64;
    CX_TRY(add_param(table, prefix, leaf, ".weight", k > 0 ? 4 : 2, shape, 1,
                     CX_INIT_TORCH_DEFAULT, fan_in, &wb->w));
    int64_t bias_shape[1] = {out_ch};
    return add_param(table, prefix, leaf, ".bias", 1, bias_shape, 0, CX_INIT_TORCH_BIAS, fan_in,
                     &wb->b);
}

cx_status cx_cod_add_norm(cx_param_table *table, const char *prefix, const char *leaf, int dim,
                          cx_wb *wb) {
    int64_t shape[1] = {dim};
    CX_TRY(add_param(table, prefix, leaf, ".weight", 1, shape, 0, CX_INIT_ONE, 0, &wb->w));
    return add_param(table, prefix, leaf, ".bias", 1, shape, 0, CX_INIT_ZERO, 0, &wb->b);
}

cx_status cx_cod_expert_declare(cx_cod_expert *e, cx_expert_type type, int dim,
                                cx_param_table *table, const char *prefix) {
    if (dim < 4 || dim > CX_COD_MAX_DECODER_DIM || dim % 4)
        return cx_fail(CX_EINVAL, "%s: expert dim must be a multiple of 4 in 4..%d, got %d", prefix,
                       CX_COD_MAX_DECODER_DIM, dim);
    e->type = type;
    e->dim = dim;
    int quarter = dim / 4;
    switch (type) {
    case CX_EXPERT_TEXTURE:
        for (int j = 0; j < 4; j++) {
            char leaf[16];
            snprintf(leaf, sizeof leaf, "dw.%d", j);
            CX_TRY(cx_cod_add_layer(table, prefix, leaf, dim, 1, 3, &e->u.texture_dw[j]));
        }
        e->pw_in = dim;
        break;
    case CX_EXPERT_LOCAL:
        CX_TRY(cx_cod_add_layer(table, prefix, "dw", dim, 1, 7, &e->u.local_dw));
        e->pw_in = dim;
        break;
    case CX_EXPERT_EDGE:
        /* weights declared zero here; cx_cod_neck_init_edges writes the filters */
        CX_TRY(cx_cod_add_layer(table, prefix, "edge", 3 * dim, 1, 3, &e->u.edge));
        table->items[table->count - 2].init = CX_INIT_ZERO;
        table->items[table->count - 1].init = CX_INIT_ZERO;
        e->pw_in = 3 * dim;
        break;
    case CX_EXPERT_FREQUENCY:
        e->pw_in = 3 * dim;
        break;
    case CX_EXPERT_CONTRAST:
        e->pw_in = 2 * dim;
        CX_TRY(cx_cod_add_layer(table, prefix, "pw", dim, e->pw_in, 1, &e->u.contrast.pw));
        CX_TRY(cx_cod_add_layer(table, prefix, "gate.fc1", quarter, dim, 0, &e->u.contrast.fc1));
        return cx_cod_add_layer(table, prefix, "gate.fc2", dim, quarter, 0, &e->u.contrast.fc2);
    case CX_EXPERT_CONTEXT:
        for (int j = 0; j < 3; j++) {
            char leaf[24];
            snprintf(leaf, sizeof leaf, "pools.%d", j);
            CX_TRY(cx_cod_add_layer(table, prefix, leaf, quarter, dim, 1,
                                    &e->u.context.pools[j]));
        }
        e->pw_in = dim + 3 * quarter;
        break;
    case CX_EXPERT_ATTENTION: {
        CX_TRY(cx_cod_add_norm(table, prefix, "norm", dim, &e->u.attention.norm));
        int64_t shape[3] = {CX_COD_XCA_HEADS, 1, 1};
        CX_TRY(add_param(table, prefix, "xca.temperature", "", 3, shape, 0, CX_INIT_ONE, 0,
                         &e->u.attention.temperature));
        CX_TRY(cx_cod_add_layer(table, prefix, "xca.qkv", 3 * dim, dim, 0, &e->u.attention.qkv));
        return cx_cod_add_layer(table, prefix, "xca.proj", dim, dim, 0, &e->u.attention.proj);
    }
    default:
        return cx_fail(CX_EINVAL, "unknown expert type %d", (int)type);
    }
    CX_TRY(cx_cod_add_layer(table, prefix, "pw", dim, e->pw_in, 1, &e->tail.pw));
    return cx_cod_add_norm(table, prefix, "norm", dim, &e->tail.norm);
}

/* ---- the shared tail: pre [n, pw_in, hw] -> pw -> LayerNorm2d -> GELU -> out ---------- */

static cx_status tail_forward(cx_cod_expert *e, cx_exec *ex) {
    cx_backend *be = ex->be;
    cx_cod_tail *t = &e->tail;
    int n = e->n, D = e->dim, hw = e->h * e->w;
    size_t count = (size_t)n * D * hw;
    cx_conv_shape cs = cx_cod_conv(n, e->pw_in, e->h, e->w, D, 1, 1, 1);
    CX_TAKE(ex, t->pw_out, count);
    be->conv2d_forward(be, &cs, e->pre, P(t->pw.w), P(t->pw.b), t->pw_out);
    CX_TAKE(ex, t->norm_out, count);
    CX_TAKE(ex, t->norm_saved, cx_layernorm2d_saved_floats(n, hw));
    be->layernorm2d_forward(be, n, D, hw, CX_COD_LN_EPS, t->pw_out, P(t->norm.w), P(t->norm.b),
                            t->norm_out, t->norm_saved);
    CX_TAKE(ex, e->out, count);
    be->gelu_forward(be, count, t->norm_out, e->out);
    return CX_OK;
}

/* dout [n, D, hw] -> *dpre [n, pw_in, hw] (new arena buffer) */
static cx_status tail_backward(cx_cod_expert *e, cx_exec *ex, const float *dout, float **dpre) {
    cx_backend *be = ex->be;
    cx_cod_tail *t = &e->tail;
    int n = e->n, D = e->dim, hw = e->h * e->w;
    size_t count = (size_t)n * D * hw;
    float *dnorm_out, *dpw_out;
    CX_TAKE_ZERO(ex, dnorm_out, count);
    be->gelu_backward(be, count, t->norm_out, dout, dnorm_out);
    CX_TAKE_ZERO(ex, dpw_out, count);
    be->layernorm2d_backward(be, n, D, hw, t->pw_out, P(t->norm.w), t->norm_saved, dnorm_out,
                             dpw_out, G(t->norm.w), G(t->norm.b));
    CX_TAKE_ZERO(ex, *dpre, (size_t)n * e->pw_in * hw);
    cx_conv_shape cs = cx_cod_conv(n, e->pw_in, e->h, e->w, D, 1, 1, 1);
    be->conv2d_backward(be, &cs, e->pre, P(t->pw.w), dpw_out, *dpre, G(t->pw.w), G(t->pw.b));
    return CX_OK;
}

/* ---- helpers ------------------------------------------------------------------------- */

/* stride-1 "same" average pool with count_include_pad false, planes = n*D */
static cx_pool_shape same_pool(int planes, int h, int w, int k) {
    cx_pool_shape s = {.planes = planes, .in_h = h, .in_w = w, .out_h = h, .out_w = w,
                       .k = k, .stride = 1, .pad = k / 2, .count_include_pad = 0};
    return s;
}

/* dst = a - b (n floats): copy then dst += -1 * b, exactly a - b in float */
static void subtract(cx_backend *be, size_t n, const float *a, const float *b, float *dst) {
    be->copy(be, dst, a, n);
    be->axpy(be, n, -1.0f, b, dst);
}

/* Channel block `block` of width D of src [n, channels, hw] into a new zeroed buffer. */
static cx_status take_block(cx_exec *ex, const float *src, int n, int channels, int D, int hw,
                            int offset, float **block) {
    CX_TAKE_ZERO(ex, *block, (size_t)n * D * hw);
    ex->be->copy_channels(ex->be, n, hw, D, src, channels, offset, *block, D, 0, 1);
    return CX_OK;
}

/* ---- forward ------------------------------------------------------------------------- */

cx_status cx_cod_expert_forward(cx_cod_expert *e, cx_exec *ex, const float *z, int n, int h,
                                int w) {
    cx_backend *be = ex->be;
    int D = e->dim, hw = h * w, quarter = D / 4;
    size_t count = (size_t)n * D * hw;
    e->n = n;
    e->h = h;
    e->w = w;
    e->in = z;
    CX_TAKE(ex, e->pre, (size_t)n * e->pw_in * hw);
    size_t mark = cx_arena_mark(ex->arena);
    switch (e->type) {
    case CX_EXPERT_TEXTURE: {
        float *branch;
        CX_TAKE(ex, branch, count);
        for (int j = 0; j < 4; j++) {
            int dilation = 1 << j;
            cx_conv_shape cs = cx_cod_conv(n, D, h, w, D, 3, dilation, D);
            const cx_wb *dw = &e->u.texture_dw[j];
            be->conv2d_forward(be, &cs, z, P(dw->w), P(dw->b), j ? branch : e->pre);
            if (j)
                be->add(be, count, e->pre, branch, e->pre);
        }
        break;
    }
    case CX_EXPERT_LOCAL: {
        cx_conv_shape cs = cx_cod_conv(n, D, h, w, D, 7, 1, D);
        be->conv2d_forward(be, &cs, z, P(e->u.local_dw.w), P(e->u.local_dw.b), e->pre);
        break;
    }
    case CX_EXPERT_EDGE: {
        cx_conv_shape cs = cx_cod_conv(n, D, h, w, 3 * D, 3, 1, D);
        be->conv2d_forward(be, &cs, z, P(e->u.edge.w), P(e->u.edge.b), e->pre);
        break;
    }
    case CX_EXPERT_FREQUENCY: {
        float *a3, *a7, *band;
        CX_TAKE(ex, a3, count);
        CX_TAKE(ex, a7, count);
        CX_TAKE(ex, band, count);
        cx_pool_shape p3 = same_pool(n * D, h, w, 3), p7 = same_pool(n * D, h, w, 7);
        be->avgpool2d_forward(be, &p3, z, a3);
        be->avgpool2d_forward(be, &p7, z, a7);
        be->copy_channels(be, n, hw, D, a3, D, 0, e->pre, 3 * D, 0, 0);
        subtract(be, count, a7, a3, band);
        be->copy_channels(be, n, hw, D, band, D, 0, e->pre, 3 * D, D, 0);
        subtract(be, count, z, a7, band);
        be->copy_channels(be, n, hw, D, band, D, 0, e->pre, 3 * D, 2 * D, 0);
        break;
    }
    case CX_EXPERT_CONTRAST: {
        float *pooled, *diff;
        CX_TAKE(ex, pooled, count);
        CX_TAKE(ex, diff, count);
        for (int j = 0; j < 2; j++) {
            cx_pool_shape ps = same_pool(n * D, h, w, j ? 9 : 3);
            be->avgpool2d_forward(be, &ps, z, pooled);
            subtract(be, count, z, pooled, diff);
            be->copy_channels(be, n, hw, D, diff, D, 0, e->pre, 2 * D, j * D, 0);
        }
        break;
    }
    case CX_EXPERT_CONTEXT: {
        be->copy_channels(be, n, hw, D, z, D, 0, e->pre, e->pw_in, 0, 0);
        for (int j = 0; j < 3; j++) {
            int o = 1 << j;
            CX_TAKE(ex, e->u.context.pooled[j], (size_t)n * D * o * o);
        }
        mark = cx_arena_mark(ex->arena); /* the pooled maps stay for backward */
        float *reduced, *upsampled;
        CX_TAKE(ex, reduced, (size_t)n * quarter * 16);
        CX_TAKE(ex, upsampled, (size_t)n * quarter * hw);
        for (int j = 0; j < 3; j++) {
            int o = 1 << j;
            cx_pool_shape ap = {.planes = n * D, .in_h = h, .in_w = w, .out_h = o, .out_w = o};
            be->adaptive_avgpool2d_forward(be, &ap, z, e->u.context.pooled[j]);
            cx_conv_shape cs = cx_cod_conv(n, D, o, o, quarter, 1, 1, 1);
            const cx_wb *pool = &e->u.context.pools[j];
            be->conv2d_forward(be, &cs, e->u.context.pooled[j], P(pool->w), P(pool->b), reduced);
            cx_pool_shape up = {.planes = n * quarter, .in_h = o, .in_w = o, .out_h = h,
                                .out_w = w};
            be->resize_bilinear_forward(be, &up, reduced, upsampled);
            be->copy_channels(be, n, hw, quarter, upsampled, quarter, 0, e->pre, e->pw_in,
                              D + j * quarter, 0);
        }
        break;
    }
    case CX_EXPERT_ATTENTION:
        break;
    default:
        return cx_fail(CX_ERUNTIME, "expert type %d has no forward", (int)e->type);
    }
    cx_arena_release(ex->arena, mark);

    if (e->type == CX_EXPERT_CONTRAST) {
        /* y = pw(pre); out = y * sigmoid(fc2(gelu(fc1(GAP(y))))) per image and channel */
        cx_cod_contrast *c = &e->u.contrast;
        cx_conv_shape cs = cx_cod_conv(n, 2 * D, h, w, D, 1, 1, 1);
        CX_TAKE(ex, c->pw_out, count);
        be->conv2d_forward(be, &cs, e->pre, P(c->pw.w), P(c->pw.b), c->pw_out);
        CX_TAKE(ex, c->gap, (size_t)n * D);
        be->global_avgpool_forward(be, n * D, hw, c->pw_out, c->gap);
        CX_TAKE(ex, c->fc1_out, (size_t)n * quarter);
        be->linear_forward(be, n, D, quarter, c->gap, P(c->fc1.w), P(c->fc1.b), c->fc1_out);
        CX_TAKE(ex, c->gelu_out, (size_t)n * quarter);
        be->gelu_forward(be, (size_t)n * quarter, c->fc1_out, c->gelu_out);
        CX_TAKE(ex, c->gate, (size_t)n * D);
        be->linear_forward(be, n, quarter, D, c->gelu_out, P(c->fc2.w), P(c->fc2.b), c->gate);
        be->sigmoid_forward(be, (size_t)n * D, c->gate, c->gate);
        CX_TAKE(ex, e->out, count);
        be->scale_mid_forward(be, 1, n * D, hw, c->pw_out, c->gate, e->out);
        return CX_OK;
    }
    if (e->type == CX_EXPERT_ATTENTION) {
        /* tokens n = y*w + x of each image: [n*hw, D] rows, as the twin's flatten(2).transpose */
        cx_cod_attention *a = &e->u.attention;
        int rows = n * hw;
        CX_TAKE(ex, a->tokens, count);
        be->transpose(be, n, D, hw, z, a->tokens);
        CX_TAKE(ex, a->ln_out, count);
        CX_TAKE(ex, a->ln_saved, cx_layernorm_saved_floats(rows));
        be->layernorm_forward(be, rows, D, CX_COD_LN_EPS, a->tokens, P(a->norm.w), P(a->norm.b),
                              a->ln_out, a->ln_saved);
        CX_TAKE(ex, a->qkv_out, 3 * count);
        be->linear_forward(be, rows, D, 3 * D, a->ln_out, P(a->qkv.w), P(a->qkv.b), a->qkv_out);
        CX_TAKE(ex, a->xca_out, count);
        CX_TAKE(ex, a->xca_saved, cx_xca_saved_floats(n, hw, D, CX_COD_XCA_HEADS));
        be->xca_forward(be, n, hw, D, CX_COD_XCA_HEADS, a->qkv_out, P(a->temperature),
                        a->xca_out, a->xca_saved);
        CX_TAKE(ex, a->proj_out, count);
        be->linear_forward(be, rows, D, D, a->xca_out, P(a->proj.w), P(a->proj.b), a->proj_out);
        CX_TAKE(ex, e->out, count);
        be->transpose(be, n, hw, D, a->proj_out, e->out);
        return CX_OK;
    }
    return tail_forward(e, ex);
}

/* ---- backward ------------------------------------------------------------------------ */

static cx_status contrast_backward(cx_cod_expert *e, cx_exec *ex, const float *dout,
                                   float **dpre) {
    cx_backend *be = ex->be;
    cx_cod_contrast *c = &e->u.contrast;
    int n = e->n, D = e->dim, hw = e->h * e->w, quarter = D / 4;
    size_t count = (size_t)n * D * hw;
    float *dy, *dgate, *dlogit, *dgelu, *dfc1, *dgap;
    CX_TAKE_ZERO(ex, dy, count);
    CX_TAKE_ZERO(ex, dgate, (size_t)n * D);
    be->scale_mid_backward(be, 1, n * D, hw, c->pw_out, c->gate, dout, dy, dgate);
    CX_TAKE_ZERO(ex, dlogit, (size_t)n * D);
    be->sigmoid_backward(be, (size_t)n * D, c->gate, dgate, dlogit);
    CX_TAKE_ZERO(ex, dgelu, (size_t)n * quarter);
    be->linear_backward(be, n, quarter, D, c->gelu_out, P(c->fc2.w), dlogit, dgelu, G(c->fc2.w),
                        G(c->fc2.b));
    CX_TAKE_ZERO(ex, dfc1, (size_t)n * quarter);
    be->gelu_backward(be, (size_t)n * quarter, c->fc1_out, dgelu, dfc1);
    CX_TAKE_ZERO(ex, dgap, (size_t)n * D);
    be->linear_backward(be, n, D, quarter, c->gap, P(c->fc1.w), dfc1, dgap, G(c->fc1.w),
                        G(c->fc1.b));
    be->global_avgpool_backward(be, n * D, hw, dgap, dy);
    CX_TAKE_ZERO(ex, *dpre, (size_t)n * 2 * D * hw);
    cx_conv_shape cs = cx_cod_conv(n, 2 * D, e->h, e->w, D, 1, 1, 1);
    be->conv2d_backward(be, &cs, e->pre, P(c->pw.w), dy, *dpre, G(c->pw.w), G(c->pw.b));
    return CX_OK;
}

static cx_status attention_backward(cx_cod_expert *e, cx_exec *ex, const float *dout,
                                    float *dz) {
    cx_backend *be = ex->be;
    cx_cod_attention *a = &e->u.attention;
    int n = e->n, D = e->dim, hw = e->h * e->w, rows = n * hw;
    size_t count = (size_t)n * D * hw;
    float *dproj, *dxca, *dqkv, *dln, *dtokens;
    CX_TAKE_ZERO(ex, dproj, count);
    be->transpose_accumulate(be, n, D, hw, dout, dproj);
    CX_TAKE_ZERO(ex, dxca, count);
    be->linear_backward(be, rows, D, D, a->xca_out, P(a->proj.w), dproj, dxca, G(a->proj.w),
                        G(a->proj.b));
    CX_TAKE_ZERO(ex, dqkv, 3 * count);
    be->xca_backward(be, n, hw, D, CX_COD_XCA_HEADS, a->qkv_out, P(a->temperature), a->xca_saved,
                     dxca, dqkv, G(a->temperature));
    CX_TAKE_ZERO(ex, dln, count);
    be->linear_backward(be, rows, D, 3 * D, a->ln_out, P(a->qkv.w), dqkv, dln, G(a->qkv.w),
                        G(a->qkv.b));
    CX_TAKE_ZERO(ex, dtokens, count);
    be->layernorm_backward(be, rows, D, a->tokens, P(a->norm.w), a->ln_saved, dln, dtokens,
                           G(a->norm.w), G(a->norm.b));
    be->transpose_accumulate(be, n, hw, D, dtokens, dz);
    return CX_OK;
}

cx_status cx_cod_expert_backward(cx_cod_expert *e, cx_exec *ex, const float *dout, float *dz) {
    cx_backend *be = ex->be;
    int n = e->n, h = e->h, w = e->w, D = e->dim, hw = h * w, quarter = D / 4;
    size_t count = (size_t)n * D * hw;
    if (e->type == CX_EXPERT_ATTENTION)
        return attention_backward(e, ex, dout, dz);
    float *dpre;
    if (e->type == CX_EXPERT_CONTRAST)
        CX_TRY(contrast_backward(e, ex, dout, &dpre));
    else
        CX_TRY(tail_backward(e, ex, dout, &dpre));
    switch (e->type) {
    case CX_EXPERT_TEXTURE:
        for (int j = 0; j < 4; j++) {
            cx_conv_shape cs = cx_cod_conv(n, D, h, w, D, 3, 1 << j, D);
            const cx_wb *dw = &e->u.texture_dw[j];
            be->conv2d_backward(be, &cs, e->in, P(dw->w), dpre, dz, G(dw->w), G(dw->b));
        }
        return CX_OK;
    case CX_EXPERT_LOCAL: {
        cx_conv_shape cs = cx_cod_conv(n, D, h, w, D, 7, 1, D);
        be->conv2d_backward(be, &cs, e->in, P(e->u.local_dw.w), dpre, dz, G(e->u.local_dw.w),
                            G(e->u.local_dw.b));
        return CX_OK;
    }
    case CX_EXPERT_EDGE: {
        cx_conv_shape cs = cx_cod_conv(n, D, h, w, 3 * D, 3, 1, D);
        be->conv2d_backward(be, &cs, e->in, P(e->u.edge.w), dpre, dz,
                            G(e->u.edge.w), G(e->u.edge.b));
        return CX_OK;
    }
    case CX_EXPERT_FREQUENCY: {
        /* pre = [a3, a7 - a3, z - a7]: dz += g2, d a7 = g1 - g2, d a3 = g0 - g1 */
        float *g0, *g1, *g2, *da;
        CX_TRY(take_block(ex, dpre, n, 3 * D, D, hw, 0, &g0));
        CX_TRY(take_block(ex, dpre, n, 3 * D, D, hw, D, &g1));
        CX_TRY(take_block(ex, dpre, n, 3 * D, D, hw, 2 * D, &g2));
        be->axpy(be, count, 1.0f, g2, dz);
        CX_TAKE(ex, da, count);
        cx_pool_shape p3 = same_pool(n * D, h, w, 3), p7 = same_pool(n * D, h, w, 7);
        subtract(be, count, g1, g2, da);
        be->avgpool2d_backward(be, &p7, da, dz);
        subtract(be, count, g0, g1, da);
        be->avgpool2d_backward(be, &p3, da, dz);
        return CX_OK;
    }
    case CX_EXPERT_CONTRAST:
        /* pre = [z - a3, z - a9]: dz += g_j, d a_j = -g_j */
        for (int j = 0; j < 2; j++) {
            float *g;
            CX_TRY(take_block(ex, dpre, n, 2 * D, D, hw, j * D, &g));
            be->axpy(be, count, 1.0f, g, dz);
            be->affine(be, count, -1.0f, 0.0f, g, g);
            cx_pool_shape ps = same_pool(n * D, h, w, j ? 9 : 3);
            be->avgpool2d_backward(be, &ps, g, dz);
        }
        return CX_OK;
    case CX_EXPERT_CONTEXT: {
        be->copy_channels(be, n, hw, D, dpre, e->pw_in, 0, dz, D, 0, 1);
        for (int j = 0; j < 3; j++) {
            int o = 1 << j;
            float *dup, *dreduced, *dpooled;
            CX_TAKE_ZERO(ex, dup, (size_t)n * quarter * hw);
            be->copy_channels(be, n, hw, quarter, dpre, e->pw_in, D + j * quarter, dup, quarter,
                              0, 1);
            CX_TAKE_ZERO(ex, dreduced, (size_t)n * quarter * o * o);
            cx_pool_shape up = {.planes = n * quarter, .in_h = o, .in_w = o, .out_h = h,
                                .out_w = w};
            be->resize_bilinear_backward(be, &up, dup, dreduced);
            CX_TAKE_ZERO(ex, dpooled, (size_t)n * D * o * o);
            cx_conv_shape cs = cx_cod_conv(n, D, o, o, quarter, 1, 1, 1);
            const cx_wb *pool = &e->u.context.pools[j];
            be->conv2d_backward(be, &cs, e->u.context.pooled[j], P(pool->w), dreduced, dpooled,
                                G(pool->w), G(pool->b));
            cx_pool_shape ap = {.planes = n * D, .in_h = h, .in_w = w, .out_h = o, .out_w = o};
            be->adaptive_avgpool2d_backward(be, &ap, dpooled, dz);
        }
        return CX_OK;
    }
    default:
        return cx_fail(CX_ERUNTIME, "expert type %d has no backward", (int)e->type);
    }
}
