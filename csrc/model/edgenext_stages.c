/* EdgeNeXt's stem, downsamplings and stages around the blocks (edgenext_blocks.c): the
 * whole backbone's forward and backward, and what a forward keeps (cx_edgenext_keep in
 * edgenext.h; docs/ops.md, "What a training forward keeps").
 *
 * Stage s (h_s = H / 2^(s+2), likewise w_s; C_s = dims[s]):
 *   entry   s = 0: stem conv 4x4 stride 4 x [B, 3, H, W] -> [B, C_0, h_0, w_0], LayerNorm2d
 *           s > 0: LayerNorm2d features[s-1] [B, C_{s-1}, h_{s-1}, w_{s-1}], conv 2x2
 *                  stride 2 -> [B, C_s, h_s, w_s]
 *   blocks  depths[s] blocks [B, C_s, h_s, w_s] -> [B, C_s, h_s, w_s]; the last block's
 *           output is features[s]
 *
 * Arena, per stage, in take order:
 *   KEEP_ALL     entry output, entry temporaries, then per block its output and its
 *                activations; everything stays.
 *   RECOMPUTE,   features[s] and (even depth) a spare [B, C_s, h_s, w_s]; the entry output;
 *   NO_BACKWARD  the entry temporaries (released once the entry is done); per block its
 *                activations (released once the block is done: the next block reuses them).
 *                Block outputs alternate between features[s], the entry output and the
 *                spare so that no block writes its own input and the last one writes
 *                features[s]; at the end everything above features[s] is released.
 *   recompute    (backward after RECOMPUTE) as KEEP_ALL, above whatever backward holds,
 *                except the last block's output, which backward never reads; features[s]
 *                stays the forward's. */
#include "edgenext.h"

#define P(off) (ex->params + (off))
#define G(off) (ex->grads ? ex->grads + (off) : NULL)

#ifdef CX_TEST_BUILD
int cx_edgenext_test_skip_recompute;
#endif

typedef enum { STAGE_KEEP, STAGE_DISCARD, STAGE_RECOMPUTE } stage_mode;

static cx_conv_shape conv_shape(int batch, int in_ch, int h, int w, int out_ch, int k,
                                int stride) {
    cx_conv_shape s = {.batch = batch, .in_ch = in_ch, .in_h = h, .in_w = w, .out_ch = out_ch,
                       .k_h = k, .k_w = k, .stride = stride, .pad_h = 0, .pad_w = 0,
                       .dilation = 1, .groups = 1};
    return s;
}

/* The stage's entry: in (x for s = 0, features[s-1] otherwise) -> out [B, C_s, h_s, w_s]
 * (the caller's). Its temporaries (the norm's input or output and statistics) come from the
 * arena and stay referenced from net for backward. */
static cx_status entry_forward(cx_edgenext *net, cx_exec *ex, int s, const float *in,
                               float *out) {
    cx_backend *be = ex->be;
    const cx_edgenext_config *cfg = &net->cfg;
    int B = net->batch, C = cfg->dims[s];
    int H = cx_edgenext_stage_h(net, s), W = cx_edgenext_stage_w(net, s);
    if (s == 0) {
        /* x [B, 3, 4H, 4W] -> stem_conv [B, C, H, W] -> LayerNorm2d -> out */
        cx_conv_shape stem = conv_shape(B, 3, net->height, net->width, C, 4, 4);
        CX_TAKE(ex, net->stem_conv, (size_t)B * C * H * W);
        be->conv2d_forward(be, &stem, in, P(net->stem_w), P(net->stem_b), net->stem_conv);
        CX_TAKE(ex, net->stem_saved, cx_layernorm2d_saved_floats(B, H * W));
        be->layernorm2d_forward(be, B, C, H * W, cfg->ln_eps, net->stem_conv,
                                P(net->stem_norm_w), P(net->stem_norm_b), out, net->stem_saved);
        net->stem_out = out;
        return CX_OK;
    }
    /* features[s-1] [B, C_prev, 2H, 2W] -> LayerNorm2d -> ds_norm_out -> conv 2x2/2 -> out */
    int C_prev = cfg->dims[s - 1], HW_prev = 4 * H * W;
    cx_conv_shape ds = conv_shape(B, C_prev, 2 * H, 2 * W, C, 2, 2);
    CX_TAKE(ex, net->ds_norm_out[s], (size_t)B * C_prev * HW_prev);
    CX_TAKE(ex, net->ds_norm_saved[s], cx_layernorm2d_saved_floats(B, HW_prev));
    be->layernorm2d_forward(be, B, C_prev, HW_prev, cfg->ln_eps, in, P(net->ds_norm_w[s]),
                            P(net->ds_norm_b[s]), net->ds_norm_out[s], net->ds_norm_saved[s]);
    be->conv2d_forward(be, &ds, net->ds_norm_out[s], P(net->ds_w[s]), P(net->ds_b[s]), out);
    net->ds_out[s] = out;
    return CX_OK;
}

/* Stage s from its input `in` (see the arena layouts above). */
static cx_status stage_forward(cx_edgenext *net, cx_exec *ex, int s, const float *in,
                               stage_mode mode) {
    const cx_edgenext_config *cfg = &net->cfg;
    int B = net->batch, H = cx_edgenext_stage_h(net, s), W = cx_edgenext_stage_w(net, s);
    int depth = net->n_blocks[s], discard = mode == STAGE_DISCARD;
    size_t n = (size_t)B * cfg->dims[s] * H * W;
    float *feature = NULL, *spare = NULL, *entry;
    size_t kept = 0; /* DISCARD: everything above features[s] goes at the end */
    if (discard) {
        CX_TAKE(ex, feature, n);
        kept = cx_arena_mark(ex->arena);
        if (depth % 2 == 0)
            CX_TAKE(ex, spare, n);
    }
    CX_TAKE(ex, entry, n);
    size_t scratch = cx_arena_mark(ex->arena);
    CX_TRY(entry_forward(net, ex, s, in, entry));
    if (discard)
        cx_arena_release(ex->arena, scratch);
    const float *cur = entry;
    for (int j = 0; j < depth; j++) {
        float *out;
        if (discard) /* j = depth - 1 writes feature; never a block's own input */
            out = spare && j == 0 ? spare : (depth - 1 - j) % 2 == 0 ? feature : entry;
        else if (mode == STAGE_RECOMPUTE && j == depth - 1)
            out = NULL;
        else
            CX_TAKE(ex, out, n);
        scratch = cx_arena_mark(ex->arena);
        CX_TRY(cx_edgenext_block_forward(&net->blocks[s][j], cfg, ex, cur, out, B, H, W));
        if (discard)
            cx_arena_release(ex->arena, scratch);
        cur = out;
    }
    if (discard)
        cx_arena_release(ex->arena, kept);
    if (mode != STAGE_RECOMPUTE)
        net->features[s] = (float *)cur;
    return CX_OK;
}

cx_status cx_edgenext_forward(cx_edgenext *net, cx_exec *ex, const float *x, int batch,
                              int height, int width, cx_edgenext_keep keep) {
    CX_TRY(cx_edgenext_check_input(net, batch, 3, height, width));
    if (keep != CX_EDGENEXT_KEEP_ALL && keep != CX_EDGENEXT_RECOMPUTE &&
        keep != CX_EDGENEXT_NO_BACKWARD)
        return cx_fail(CX_EINVAL, "unknown backbone keep mode %d", (int)keep);
    net->batch = batch;
    net->height = height;
    net->width = width;
    net->keep = keep;
    net->input = x;
    stage_mode mode = keep == CX_EDGENEXT_KEEP_ALL ? STAGE_KEEP : STAGE_DISCARD;
    for (int s = 0; s < 4; s++)
        CX_TRY(stage_forward(net, ex, s, s == 0 ? x : net->features[s - 1], mode));
    return CX_OK;
}

/* Gradient of stage s's entry: dentry [B, C_s, h_s, w_s] -> dfeatures[s-1] (s > 0) or dx
 * (s = 0, when not NULL), both accumulated. */
static cx_status entry_backward(cx_edgenext *net, cx_exec *ex, int s, const float *dentry,
                                float *const dfeatures[4], float *dx) {
    cx_backend *be = ex->be;
    const cx_edgenext_config *cfg = &net->cfg;
    int B = net->batch, C = cfg->dims[s];
    int H = cx_edgenext_stage_h(net, s), W = cx_edgenext_stage_w(net, s);
    if (s > 0) {
        int C_prev = cfg->dims[s - 1], H_prev = 2 * H, W_prev = 2 * W;
        cx_conv_shape ds = conv_shape(B, C_prev, H_prev, W_prev, C, 2, 2);
        float *dnorm; /* [B, C_prev, H_prev, W_prev] */
        CX_TAKE_ZERO(ex, dnorm, (size_t)B * C_prev * H_prev * W_prev);
        be->conv2d_backward(be, &ds, net->ds_norm_out[s], P(net->ds_w[s]), dentry, dnorm,
                            G(net->ds_w[s]), G(net->ds_b[s]));
        be->layernorm2d_backward(be, B, C_prev, H_prev * W_prev, net->features[s - 1],
                                 P(net->ds_norm_w[s]), net->ds_norm_saved[s], dnorm,
                                 dfeatures[s - 1], G(net->ds_norm_w[s]), G(net->ds_norm_b[s]));
        return CX_OK;
    }
    float *dstem_conv; /* [B, C, H, W] */
    CX_TAKE_ZERO(ex, dstem_conv, (size_t)B * C * H * W);
    be->layernorm2d_backward(be, B, C, H * W, net->stem_conv, P(net->stem_norm_w),
                             net->stem_saved, dentry, dstem_conv, G(net->stem_norm_w),
                             G(net->stem_norm_b));
    cx_conv_shape stem = conv_shape(B, 3, net->height, net->width, C, 4, 4);
    be->conv2d_backward(be, &stem, net->input, P(net->stem_w), dstem_conv, dx, G(net->stem_w),
                        G(net->stem_b));
    return CX_OK;
}

static int recomputes(const cx_edgenext *net) {
#ifdef CX_TEST_BUILD
    if (cx_edgenext_test_skip_recompute)
        return 0;
#endif
    return net->keep == CX_EDGENEXT_RECOMPUTE;
}

cx_status cx_edgenext_backward(cx_edgenext *net, cx_exec *ex, float *const dfeatures[4],
                               float *dx) {
    if (net->keep == CX_EDGENEXT_NO_BACKWARD)
        return cx_fail(CX_ERUNTIME, "backward through the backbone after a forward that kept "
                       "none of its activations (a frozen-backbone or prediction forward)");
    const cx_edgenext_config *cfg = &net->cfg;
    int B = net->batch;
    for (int s = 3; s >= 0; s--) {
        size_t stage_mark = cx_arena_mark(ex->arena);
        if (recomputes(net)) /* checkpointing: this stage's activations, released below */
            CX_TRY(stage_forward(net, ex, s, s == 0 ? net->input : net->features[s - 1],
                                 STAGE_RECOMPUTE));
        int H = cx_edgenext_stage_h(net, s), W = cx_edgenext_stage_w(net, s);
        size_t n = (size_t)B * cfg->dims[s] * H * W;
        const float *dcur = dfeatures[s];
        for (int j = net->n_blocks[s] - 1; j >= 0; j--) {
            float *din; /* [B, C_s, h_s, w_s] */
            CX_TAKE_ZERO(ex, din, n);
            size_t block_mark = cx_arena_mark(ex->arena);
            CX_TRY(cx_edgenext_block_backward(&net->blocks[s][j], cfg, ex, B, H, W, dcur, din));
            cx_arena_release(ex->arena, block_mark);
            dcur = din;
        }
        CX_TRY(entry_backward(net, ex, s, dcur, dfeatures, dx));
        cx_exec_grads_final(ex, net->stage_start[s]); /* stages below write none of these */
        cx_arena_release(ex->arena, stage_mark);
    }
    return CX_OK;
}
