/* The reverse-attention decoder with deep-supervision heads (see cod.h; twin
 * interpretation 7).
 *
 *   d_3 = z'_3, p_3 = heads.3(d_3)
 *   k = 2, 1, 0 (size_k = the size of neck map k):
 *     s   = sigmoid(up(p_{k+1}, size_k))            [B, 1, hw_k]   (up: bilinear, align_corners False)
 *     1+r = 2 - s  (r = 1 - s, what is still missed)
 *     d_k = fuse.k(cat[up(d_{k+1}, size_k), z'_k * (1 + r)])   [B, D, hw_k]
 *     fuse.k = gelu(norm2(conv2(gelu(norm1(conv1(.)))))), 3x3 convs with padding 1
 *     p_k = heads.k(d_k)                            [B, 1, hw_k]   (1x1 conv D -> 1) */
#include "cod.h"

#include <stdio.h>

#define P(off) (ex->params + (off))
#define G(off) (ex->grads ? ex->grads + (off) : NULL)

cx_status cx_cod_decoder_declare(cx_cod_decoder *dec, int dim, cx_param_table *table) {
    dec->dim = dim;
    for (int k = 0; k < 3; k++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "decoder.fuse.%d.", k);
        CX_TRY(cx_cod_add_layer(table, prefix, "conv1", dim, 2 * dim, 3, &dec->conv1[k]));
        CX_TRY(cx_cod_add_norm(table, prefix, "norm1", dim, &dec->norm1[k]));
        CX_TRY(cx_cod_add_layer(table, prefix, "conv2", dim, dim, 3, &dec->conv2[k]));
        CX_TRY(cx_cod_add_norm(table, prefix, "norm2", dim, &dec->norm2[k]));
    }
    for (int k = 0; k < 4; k++) {
        char leaf[24];
        snprintf(leaf, sizeof leaf, "heads.%d", k);
        CX_TRY(cx_cod_add_layer(table, "decoder.", leaf, 1, dim, 1, &dec->heads[k]));
    }
    return CX_OK;
}

/* bilinear resize of `planes` maps from level `from` to level `to` sizes */
static cx_pool_shape resize_shape(const cx_cod_decoder *dec, int planes, int from, int to) {
    cx_pool_shape s = {.planes = planes, .in_h = dec->h[from], .in_w = dec->w[from],
                       .out_h = dec->h[to], .out_w = dec->w[to]};
    return s;
}

static void head_forward(cx_cod_decoder *dec, cx_exec *ex, int k) {
    cx_conv_shape cs = cx_cod_conv(dec->batch, dec->dim, dec->h[k], dec->w[k], 1, 1, 1, 1);
    ex->be->conv2d_forward(ex->be, &cs, dec->d[k], P(dec->heads[k].w), P(dec->heads[k].b),
                           dec->logits[k]);
}

cx_status cx_cod_decoder_forward(cx_cod_decoder *dec, cx_exec *ex, float *const necks[4],
                                 int batch, const int h[4], const int w[4]) {
    cx_backend *be = ex->be;
    int B = batch, D = dec->dim;
    dec->batch = B;
    for (int k = 0; k < 4; k++) {
        dec->h[k] = h[k];
        dec->w[k] = w[k];
        dec->necks[k] = necks[k];
    }
    dec->d[3] = necks[3];
    CX_TAKE(ex, dec->logits[3], (size_t)B * h[3] * w[3]);
    head_forward(dec, ex, 3);
    for (int k = 2; k >= 0; k--) {
        int hw = h[k] * w[k];
        size_t count = (size_t)B * D * hw;
        cx_pool_shape up_p = resize_shape(dec, B, k + 1, k);
        cx_pool_shape up_d = resize_shape(dec, B * D, k + 1, k);
        CX_TAKE(ex, dec->sig[k], (size_t)B * hw);
        be->resize_bilinear_forward(be, &up_p, dec->logits[k + 1], dec->sig[k]);
        be->sigmoid_forward(be, (size_t)B * hw, dec->sig[k], dec->sig[k]);
        CX_TAKE(ex, dec->one_plus_r[k], (size_t)B * hw);
        be->affine(be, (size_t)B * hw, -1.0f, 2.0f, dec->sig[k], dec->one_plus_r[k]);
        CX_TAKE(ex, dec->cat[k], 2 * count);
        size_t mark = cx_arena_mark(ex->arena);
        float *part;
        CX_TAKE(ex, part, count);
        be->resize_bilinear_forward(be, &up_d, dec->d[k + 1], part);
        be->copy_channels(be, B, hw, D, part, D, 0, dec->cat[k], 2 * D, 0, 0);
        be->scale_outer_inner_forward(be, B, D, hw, necks[k], dec->one_plus_r[k], part);
        be->copy_channels(be, B, hw, D, part, D, 0, dec->cat[k], 2 * D, D, 0);
        cx_arena_release(ex->arena, mark);

        cx_conv_shape cs1 = cx_cod_conv(B, 2 * D, h[k], w[k], D, 3, 1, 1);
        cx_conv_shape cs2 = cx_cod_conv(B, D, h[k], w[k], D, 3, 1, 1);
        CX_TAKE(ex, dec->c1[k], count);
        be->conv2d_forward(be, &cs1, dec->cat[k], P(dec->conv1[k].w), P(dec->conv1[k].b),
                           dec->c1[k]);
        CX_TAKE(ex, dec->n1[k], count);
        CX_TAKE(ex, dec->n1_saved[k], cx_layernorm2d_saved_floats(B, hw));
        be->layernorm2d_forward(be, B, D, hw, CX_COD_LN_EPS, dec->c1[k], P(dec->norm1[k].w),
                                P(dec->norm1[k].b), dec->n1[k], dec->n1_saved[k]);
        CX_TAKE(ex, dec->g1[k], count);
        be->gelu_forward(be, count, dec->n1[k], dec->g1[k]);
        CX_TAKE(ex, dec->c2[k], count);
        be->conv2d_forward(be, &cs2, dec->g1[k], P(dec->conv2[k].w), P(dec->conv2[k].b),
                           dec->c2[k]);
        CX_TAKE(ex, dec->n2[k], count);
        CX_TAKE(ex, dec->n2_saved[k], cx_layernorm2d_saved_floats(B, hw));
        be->layernorm2d_forward(be, B, D, hw, CX_COD_LN_EPS, dec->c2[k], P(dec->norm2[k].w),
                                P(dec->norm2[k].b), dec->n2[k], dec->n2_saved[k]);
        CX_TAKE(ex, dec->d[k], count);
        be->gelu_forward(be, count, dec->n2[k], dec->d[k]);
        CX_TAKE(ex, dec->logits[k], (size_t)B * hw);
        head_forward(dec, ex, k);
    }
    return CX_OK;
}

static void head_backward(cx_cod_decoder *dec, cx_exec *ex, int k, const float *dlogits,
                          float *dd) {
    cx_conv_shape cs = cx_cod_conv(dec->batch, dec->dim, dec->h[k], dec->w[k], 1, 1, 1, 1);
    ex->be->conv2d_backward(ex->be, &cs, dec->d[k], P(dec->heads[k].w), dlogits, dd,
                            G(dec->heads[k].w), G(dec->heads[k].b));
}

cx_status cx_cod_decoder_backward(cx_cod_decoder *dec, cx_exec *ex, float *const dlogits[4],
                                  float *const dnecks[4]) {
    cx_backend *be = ex->be;
    int B = dec->batch, D = dec->dim;
    float *dd[4];
    for (int k = 0; k < 3; k++)
        CX_TAKE_ZERO(ex, dd[k], (size_t)B * D * dec->h[k] * dec->w[k]);
    dd[3] = dnecks[3]; /* d_3 is the neck map itself */
    for (int k = 0; k < 3; k++) {
        int hw = dec->h[k] * dec->w[k];
        size_t count = (size_t)B * D * hw;
        size_t mark = cx_arena_mark(ex->arena);
        head_backward(dec, ex, k, dlogits[k], dd[k]);
        /* fuse.k, last layer first; dd[k] is complete: head k and level k - 1 are done */
        cx_conv_shape cs1 = cx_cod_conv(B, 2 * D, dec->h[k], dec->w[k], D, 3, 1, 1);
        cx_conv_shape cs2 = cx_cod_conv(B, D, dec->h[k], dec->w[k], D, 3, 1, 1);
        float *dn2, *dc2, *dg1, *dn1, *dc1, *dcat;
        CX_TAKE_ZERO(ex, dn2, count);
        be->gelu_backward(be, count, dec->n2[k], dd[k], dn2);
        CX_TAKE_ZERO(ex, dc2, count);
        be->layernorm2d_backward(be, B, D, hw, dec->c2[k], P(dec->norm2[k].w), dec->n2_saved[k],
                                 dn2, dc2, G(dec->norm2[k].w), G(dec->norm2[k].b));
        CX_TAKE_ZERO(ex, dg1, count);
        be->conv2d_backward(be, &cs2, dec->g1[k], P(dec->conv2[k].w), dc2, dg1,
                            G(dec->conv2[k].w), G(dec->conv2[k].b));
        CX_TAKE_ZERO(ex, dn1, count);
        be->gelu_backward(be, count, dec->n1[k], dg1, dn1);
        CX_TAKE_ZERO(ex, dc1, count);
        be->layernorm2d_backward(be, B, D, hw, dec->c1[k], P(dec->norm1[k].w), dec->n1_saved[k],
                                 dn1, dc1, G(dec->norm1[k].w), G(dec->norm1[k].b));
        CX_TAKE_ZERO(ex, dcat, 2 * count);
        be->conv2d_backward(be, &cs1, dec->cat[k], P(dec->conv1[k].w), dc1, dcat,
                            G(dec->conv1[k].w), G(dec->conv1[k].b));
        /* cat = [up(d_{k+1}), z'_k * (1 + r)] */
        float *dpart, *done_plus_r, *dup_logits;
        CX_TAKE_ZERO(ex, dpart, count);
        be->copy_channels(be, B, hw, D, dcat, 2 * D, 0, dpart, D, 0, 1);
        cx_pool_shape up_d = resize_shape(dec, B * D, k + 1, k);
        be->resize_bilinear_backward(be, &up_d, dpart, dd[k + 1]);
        be->zero(be, dpart, count);
        be->copy_channels(be, B, hw, D, dcat, 2 * D, D, dpart, D, 0, 1);
        CX_TAKE_ZERO(ex, done_plus_r, (size_t)B * hw);
        be->scale_outer_inner_backward(be, B, D, hw, dec->necks[k], dec->one_plus_r[k], dpart,
                                       dnecks[k], done_plus_r);
        be->affine(be, (size_t)B * hw, -1.0f, 0.0f, done_plus_r, done_plus_r); /* d s */
        CX_TAKE_ZERO(ex, dup_logits, (size_t)B * hw);
        be->sigmoid_backward(be, (size_t)B * hw, dec->sig[k], done_plus_r, dup_logits);
        cx_pool_shape up_p = resize_shape(dec, B, k + 1, k);
        be->resize_bilinear_backward(be, &up_p, dup_logits, dlogits[k + 1]);
        cx_arena_release(ex->arena, mark);
    }
    head_backward(dec, ex, 3, dlogits[3], dd[3]);
    return CX_OK;
}
