/* EdgeNeXt's two block kinds, forward and backward, on the op interface (see edgenext.h);
 * the stem, the downsamplings and the stages around them are in edgenext_stages.c.
 *
 * Layouts: NCHW images [B, C, HW]; channels-last token rows [B*HW, C] for the norms,
 * MLPs and attention (timm permutes to NHWC there too). Every buffer but the block's
 * output (the caller's) comes from the arena; forward keeps what backward needs in the
 * block structs; the caller releases a block's internal gradients when it is done. */
#include "edgenext.h"

#define P(off) (ex->params + (off))
#define G(off) (ex->grads ? ex->grads + (off) : NULL)

static cx_conv_shape conv_shape(int batch, int in_ch, int h, int w, int out_ch, int k,
                                int stride, int pad, int groups) {
    cx_conv_shape s = {.batch = batch, .in_ch = in_ch, .in_h = h, .in_w = w, .out_ch = out_ch,
                       .k_h = k, .k_w = k, .stride = stride, .pad_h = pad, .pad_w = pad,
                       .dilation = 1, .groups = groups};
    return s;
}

/* ---- the MLP half shared by both block kinds --------------------------------------
 * x [rows, C] -> LayerNorm -> fc1 [rows, hidden] -> GELU -> fc2 [rows, C] -> * gamma
 * result in blk->scaled [rows, C] */
static cx_status mlp_forward(cx_edgenext_block *blk, cx_exec *ex, const float *x, int rows,
                             float eps) {
    cx_backend *be = ex->be;
    int C = blk->dim, hidden = blk->hidden;
    CX_TAKE(ex, blk->norm_out, (size_t)rows * C);
    CX_TAKE(ex, blk->norm_saved, cx_layernorm_saved_floats(rows));
    be->layernorm_forward(be, rows, C, eps, x, P(blk->norm_w), P(blk->norm_b), blk->norm_out,
                          blk->norm_saved);
    CX_TAKE(ex, blk->fc1_out, (size_t)rows * hidden);
    be->linear_forward(be, rows, C, hidden, blk->norm_out, P(blk->fc1_w), P(blk->fc1_b),
                       blk->fc1_out);
    CX_TAKE(ex, blk->gelu_out, (size_t)rows * hidden);
    be->gelu_forward(be, (size_t)rows * hidden, blk->fc1_out, blk->gelu_out);
    CX_TAKE(ex, blk->fc2_out, (size_t)rows * C);
    be->linear_forward(be, rows, hidden, C, blk->gelu_out, P(blk->fc2_w), P(blk->fc2_b),
                       blk->fc2_out);
    CX_TAKE(ex, blk->scaled, (size_t)rows * C);
    be->scale_mid_forward(be, rows, C, 1, blk->fc2_out, P(blk->gamma), blk->scaled);
    return CX_OK;
}

/* dscaled [rows, C] -> dx [rows, C] (accumulated) */
static cx_status mlp_backward(cx_edgenext_block *blk, cx_exec *ex, const float *x, int rows,
                              const float *dscaled, float *dx) {
    cx_backend *be = ex->be;
    int C = blk->dim, hidden = blk->hidden;
    float *dfc2_out, *dgelu_out, *dfc1_out, *dnorm_out;
    CX_TAKE_ZERO(ex, dfc2_out, (size_t)rows * C);
    be->scale_mid_backward(be, rows, C, 1, blk->fc2_out, P(blk->gamma), dscaled, dfc2_out,
                           G(blk->gamma));
    CX_TAKE_ZERO(ex, dgelu_out, (size_t)rows * hidden);
    be->linear_backward(be, rows, hidden, C, blk->gelu_out, P(blk->fc2_w), dfc2_out, dgelu_out,
                        G(blk->fc2_w), G(blk->fc2_b));
    CX_TAKE_ZERO(ex, dfc1_out, (size_t)rows * hidden);
    be->gelu_backward(be, (size_t)rows * hidden, blk->fc1_out, dgelu_out, dfc1_out);
    CX_TAKE_ZERO(ex, dnorm_out, (size_t)rows * C);
    be->linear_backward(be, rows, C, hidden, blk->norm_out, P(blk->fc1_w), dfc1_out, dnorm_out,
                        G(blk->fc1_w), G(blk->fc1_b));
    be->layernorm_backward(be, rows, C, x, P(blk->norm_w), blk->norm_saved, dnorm_out, dx,
                           G(blk->norm_w), G(blk->norm_b));
    return CX_OK;
}

/* out [B, C, HW] = in + transpose(blk->scaled [B*HW, C]); nothing when out is NULL */
static void residual_out(cx_edgenext_block *blk, cx_backend *be, const float *in, float *out,
                         int B, int HW) {
    blk->out = out;
    if (!out)
        return;
    be->copy(be, out, in, (size_t)B * HW * blk->dim);
    be->transpose_accumulate(be, B, HW, blk->dim, blk->scaled, out);
}

/* ---- ConvBlock: x + transpose(gamma * MLP(LN(transpose(dwconv(x))))) --------------- */
static cx_status convblock_forward(cx_edgenext_block *blk, cx_exec *ex, const float *in,
                                   float *out, int B, int H, int W, float eps) {
    cx_backend *be = ex->be;
    int C = blk->dim, HW = H * W, rows = B * HW;
    size_t n = (size_t)rows * C;
    cx_conv_shape cs = conv_shape(B, C, H, W, C, blk->kernel, 1, blk->kernel / 2, C);
    blk->in = in;
    CX_TAKE(ex, blk->dw_out, n);
    be->conv2d_forward(be, &cs, in, P(blk->dw_w), P(blk->dw_b), blk->dw_out);
    CX_TAKE(ex, blk->tokens, n);
    be->transpose(be, B, C, HW, blk->dw_out, blk->tokens);
    CX_TRY(mlp_forward(blk, ex, blk->tokens, rows, eps));
    residual_out(blk, be, in, out, B, HW);
    return CX_OK;
}

static cx_status convblock_backward(cx_edgenext_block *blk, cx_exec *ex, int B, int H, int W,
                                    const float *dout, float *din) {
    cx_backend *be = ex->be;
    int C = blk->dim, HW = H * W, rows = B * HW;
    size_t n = (size_t)rows * C;
    cx_conv_shape cs = conv_shape(B, C, H, W, C, blk->kernel, 1, blk->kernel / 2, C);
    be->axpy(be, n, 1.0f, dout, din); /* the residual */
    float *dscaled, *dtokens, *ddw_out;
    CX_TAKE_ZERO(ex, dscaled, n);
    be->transpose_accumulate(be, B, C, HW, dout, dscaled);
    CX_TAKE_ZERO(ex, dtokens, n);
    CX_TRY(mlp_backward(blk, ex, blk->tokens, rows, dscaled, dtokens));
    CX_TAKE_ZERO(ex, ddw_out, n);
    be->transpose_accumulate(be, B, HW, C, dtokens, ddw_out);
    be->conv2d_backward(be, &cs, blk->in, P(blk->dw_w), ddw_out, din, G(blk->dw_w),
                        G(blk->dw_b));
    return CX_OK;
}

/* ---- SDTA: split depthwise cascade, (positional encoding), XCA, MLP ----------------- */
static cx_status sdta_forward(cx_edgenext_block *blk, const cx_edgenext_config *cfg,
                              cx_exec *ex, const float *in, float *out, int B, int H, int W) {
    cx_backend *be = ex->be;
    int C = blk->dim, HW = H * W, rows = B * HW, w = blk->split_width, n = blk->n_splits;
    int last_w = C - n * w;
    size_t n_all = (size_t)rows * C, n_split = (size_t)B * w * HW;
    float eps = cfg->ln_eps;
    blk->in = in;
    cx_conv_shape cs = conv_shape(B, w, H, W, w, 3, 1, 1, w);
    for (int i = 0; i < n; i++) {
        CX_TAKE(ex, blk->split_in[i], n_split);
        be->copy_channels(be, B, HW, w, in, C, i * w, blk->split_in[i], w, 0, 0);
        if (i > 0) /* sp = sp + spx[i] */
            be->add(be, n_split, blk->split_in[i], blk->split_out[i - 1], blk->split_in[i]);
        CX_TAKE(ex, blk->split_out[i], n_split);
        be->conv2d_forward(be, &cs, blk->split_in[i], P(blk->conv_w[i]), P(blk->conv_b[i]),
                           blk->split_out[i]);
    }
    CX_TAKE(ex, blk->cat, n_all);
    for (int i = 0; i < n; i++)
        be->copy_channels(be, B, HW, w, blk->split_out[i], w, 0, blk->cat, C, i * w, 0);
    be->copy_channels(be, B, HW, last_w, in, C, n * w, blk->cat, C, n * w, 0);
    CX_TAKE(ex, blk->tokens, n_all);
    be->transpose(be, B, C, HW, blk->cat, blk->tokens);
    if (blk->has_pos) {
        int hidden = cfg->pos_hidden;
        cx_conv_shape ps = conv_shape(1, 2 * hidden, H, W, C, 1, 1, 0, 1);
        CX_TAKE(ex, blk->posenc, (size_t)2 * hidden * HW);
        be->posenc_fourier(be, hidden, cfg->pos_temperature, H, W, blk->posenc);
        CX_TAKE(ex, blk->pos, (size_t)C * HW);
        be->conv2d_forward(be, &ps, blk->posenc, P(blk->pos_w), P(blk->pos_b), blk->pos);
        for (int b = 0; b < B; b++)
            be->transpose_accumulate(be, 1, C, HW, blk->pos, blk->tokens + (size_t)b * HW * C);
    }
    CX_TAKE(ex, blk->xca_norm_out, n_all);
    CX_TAKE(ex, blk->xca_norm_saved, cx_layernorm_saved_floats(rows));
    be->layernorm_forward(be, rows, C, eps, blk->tokens, P(blk->norm_xca_w), P(blk->norm_xca_b),
                          blk->xca_norm_out, blk->xca_norm_saved);
    CX_TAKE(ex, blk->qkv, 3 * n_all);
    be->linear_forward(be, rows, C, 3 * C, blk->xca_norm_out, P(blk->qkv_w), P(blk->qkv_b),
                       blk->qkv);
    CX_TAKE(ex, blk->xca_out, n_all);
    CX_TAKE(ex, blk->xca_saved, cx_xca_saved_floats(B, HW, C, cfg->heads));
    be->xca_forward(be, B, HW, C, cfg->heads, blk->qkv, P(blk->temperature), blk->xca_out,
                    blk->xca_saved);
    CX_TAKE(ex, blk->proj_out, n_all);
    be->linear_forward(be, rows, C, C, blk->xca_out, P(blk->proj_w), P(blk->proj_b),
                       blk->proj_out);
    CX_TAKE(ex, blk->attn_res, n_all);
    be->scale_mid_forward(be, rows, C, 1, blk->proj_out, P(blk->gamma_xca), blk->attn_res);
    be->add(be, n_all, blk->tokens, blk->attn_res, blk->attn_res);
    CX_TRY(mlp_forward(blk, ex, blk->attn_res, rows, eps));
    residual_out(blk, be, in, out, B, HW);
    return CX_OK;
}

static cx_status sdta_backward(cx_edgenext_block *blk, const cx_edgenext_config *cfg,
                               cx_exec *ex, int B, int H, int W, const float *dout, float *din) {
    cx_backend *be = ex->be;
    int C = blk->dim, HW = H * W, rows = B * HW, w = blk->split_width, n = blk->n_splits;
    int last_w = C - n * w;
    size_t n_all = (size_t)rows * C, n_split = (size_t)B * w * HW;
    be->axpy(be, n_all, 1.0f, dout, din); /* the block's residual */
    float *dscaled, *dattn_res, *dtokens, *dproj_out, *dxca_out, *dqkv, *dxca_norm, *dcat;
    CX_TAKE_ZERO(ex, dscaled, n_all);
    be->transpose_accumulate(be, B, C, HW, dout, dscaled);
    CX_TAKE_ZERO(ex, dattn_res, n_all);
    CX_TRY(mlp_backward(blk, ex, blk->attn_res, rows, dscaled, dattn_res));
    CX_TAKE_ZERO(ex, dtokens, n_all);
    be->axpy(be, n_all, 1.0f, dattn_res, dtokens); /* the attention residual */
    CX_TAKE_ZERO(ex, dproj_out, n_all);
    be->scale_mid_backward(be, rows, C, 1, blk->proj_out, P(blk->gamma_xca), dattn_res,
                           dproj_out, G(blk->gamma_xca));
    CX_TAKE_ZERO(ex, dxca_out, n_all);
    be->linear_backward(be, rows, C, C, blk->xca_out, P(blk->proj_w), dproj_out, dxca_out,
                        G(blk->proj_w), G(blk->proj_b));
    CX_TAKE_ZERO(ex, dqkv, 3 * n_all);
    be->xca_backward(be, B, HW, C, cfg->heads, blk->qkv, P(blk->temperature), blk->xca_saved,
                     dxca_out, dqkv, G(blk->temperature));
    CX_TAKE_ZERO(ex, dxca_norm, n_all);
    be->linear_backward(be, rows, C, 3 * C, blk->xca_norm_out, P(blk->qkv_w), dqkv, dxca_norm,
                        G(blk->qkv_w), G(blk->qkv_b));
    be->layernorm_backward(be, rows, C, blk->tokens, P(blk->norm_xca_w), blk->xca_norm_saved,
                           dxca_norm, dtokens, G(blk->norm_xca_w), G(blk->norm_xca_b));
    if (blk->has_pos && ex->grads) {
        int hidden = cfg->pos_hidden;
        cx_conv_shape ps = conv_shape(1, 2 * hidden, H, W, C, 1, 1, 0, 1);
        float *dpos;
        CX_TAKE_ZERO(ex, dpos, (size_t)C * HW);
        for (int b = 0; b < B; b++)
            be->transpose_accumulate(be, 1, HW, C, dtokens + (size_t)b * HW * C, dpos);
        be->conv2d_backward(be, &ps, blk->posenc, P(blk->pos_w), dpos, NULL, G(blk->pos_w),
                            G(blk->pos_b));
    }
    CX_TAKE_ZERO(ex, dcat, n_all);
    be->transpose_accumulate(be, B, HW, C, dtokens, dcat);
    /* the untouched last chunk */
    be->copy_channels(be, B, HW, last_w, dcat, C, n * w, din, C, n * w, 1);
    /* the cascade, last conv first: split_in[i] = chunk_i (+ split_out[i-1] for i > 0) */
    cx_conv_shape cs = conv_shape(B, w, H, W, w, 3, 1, 1, w);
    const float *dnext_in = NULL;
    for (int i = n - 1; i >= 0; i--) {
        float *dsplit_out, *dsplit_in;
        CX_TAKE_ZERO(ex, dsplit_out, n_split);
        be->copy_channels(be, B, HW, w, dcat, C, i * w, dsplit_out, w, 0, 1);
        if (dnext_in)
            be->axpy(be, n_split, 1.0f, dnext_in, dsplit_out);
        CX_TAKE_ZERO(ex, dsplit_in, n_split);
        be->conv2d_backward(be, &cs, blk->split_in[i], P(blk->conv_w[i]), dsplit_out, dsplit_in,
                            G(blk->conv_w[i]), G(blk->conv_b[i]));
        be->copy_channels(be, B, HW, w, dsplit_in, w, 0, din, C, i * w, 1);
        dnext_in = dsplit_in;
    }
    return CX_OK;
}

/* ---- either kind ----------------------------------------------------------------------- */

cx_status cx_edgenext_block_forward(cx_edgenext_block *blk, const cx_edgenext_config *cfg,
                                    cx_exec *ex, const float *in, float *out, int B, int H,
                                    int W) {
    if (blk->is_sdta)
        return sdta_forward(blk, cfg, ex, in, out, B, H, W);
    return convblock_forward(blk, ex, in, out, B, H, W, cfg->ln_eps);
}

cx_status cx_edgenext_block_backward(cx_edgenext_block *blk, const cx_edgenext_config *cfg,
                                     cx_exec *ex, int B, int H, int W, const float *dout,
                                     float *din) {
    if (blk->is_sdta)
        return sdta_backward(blk, cfg, ex, B, H, W, dout, din);
    return convblock_backward(blk, ex, B, H, W, dout, din);
}
