/* EdgeNeXt backbone, as timm builds it (names, shapes and arithmetic), on the op
 * interface. Facts: docs/model.md "EdgeNeXt as timm builds it".
 *
 *   input  x [B, 3, H, W], H and W multiples of 32
 *   output four feature maps (stage outputs) f_s [B, dims[s], H/2^(s+2), W/2^(s+2)]
 *
 * Stage 0: stem Conv2d(3, d0, k4, s4) + LayerNorm2d, then depths[0] blocks.
 * Stage s >= 1: LayerNorm2d(d_{s-1}) + Conv2d(d_{s-1}, d_s, k2, s2), then depths[s]
 * blocks; the last global_blocks[s] blocks are SDTA (split depthwise + transposed
 * attention), the others ConvBlocks. */
#ifndef CX_EDGENEXT_H
#define CX_EDGENEXT_H

#include "arena.h"
#include "params.h"

#define CX_EDGENEXT_MAX_BLOCKS 16
#define CX_SDTA_MAX_SPLITS 8

typedef struct {
    char name[48];
    int depths[4];
    int dims[4];
    int heads;
    int kernel_sizes[4];
    int d2_scales[4];
    int use_pos_emb[4];
    int global_blocks[4]; /* SDTA blocks at the end of each stage */
    int expand_ratio;
    float ln_eps;
    float layer_scale_init; /* timm: 1e-6 */
    int pos_hidden;         /* 32 */
    float pos_temperature;  /* 10000 */
} cx_edgenext_config;

/* Fills *out for a known config name; CX_EKEY listing the known names otherwise. */
cx_status cx_edgenext_config_by_name(const char *name, cx_edgenext_config *out);
/* Comma-separated names of the known configs. */
const char *cx_edgenext_config_names(void);

/* Parameter offsets (into the model's one buffer) and per-step activations of a block. */
typedef struct {
    int is_sdta, dim, kernel, hidden; /* hidden = expand_ratio * dim */
    /* shared by both kinds */
    size_t gamma, norm_w, norm_b, fc1_w, fc1_b, fc2_w, fc2_b;
    /* ConvBlock */
    size_t dw_w, dw_b;
    /* SDTA */
    int n_splits, split_width, has_pos;
    size_t gamma_xca, conv_w[CX_SDTA_MAX_SPLITS], conv_b[CX_SDTA_MAX_SPLITS];
    size_t pos_w, pos_b, norm_xca_w, norm_xca_b, temperature, qkv_w, qkv_b, proj_w, proj_b;

    /* activations of the last forward (arena pointers) */
    const float *in;
    float *dw_out;                 /* ConvBlock: [B, C, HW] */
    float *split_in[CX_SDTA_MAX_SPLITS], *split_out[CX_SDTA_MAX_SPLITS]; /* [B, w, HW] */
    float *cat;                    /* SDTA: [B, C, HW] */
    float *posenc, *pos;           /* [2*hidden, HW], [C, HW] */
    float *tokens;                 /* [B*HW, C] */
    float *xca_norm_out, *xca_norm_saved, *qkv, *xca_out, *xca_saved, *proj_out, *attn_res;
    float *norm_out, *norm_saved, *fc1_out, *gelu_out, *fc2_out, *scaled; /* MLP part */
    float *out;                    /* [B, C, HW], the caller's buffer (NULL: not produced) */
} cx_edgenext_block;

/* What a forward keeps for backward (docs/ops.md, "What a training forward keeps").
 *   KEEP_ALL     every activation backward reads: the plain training forward.
 *   RECOMPUTE    gradient checkpointing: only the network input and the four stage outputs
 *                (features) stay; backward runs each stage's forward again, from its input
 *                (x or features[s-1]), just before that stage's backward, and releases it
 *                after. The recomputed values are bit-identical (same ops, same inputs).
 *   NO_BACKWARD  the same memory as RECOMPUTE, for a forward that no backward through the
 *                backbone follows (a frozen backbone, prediction): backward is refused.
 * Under RECOMPUTE and NO_BACKWARD each block's scratch is released when the block is done,
 * so the next block reuses it; the block outputs alternate between the stage's feature
 * buffer, its entry buffer and (even depths) one spare buffer of the same size. */
typedef enum {
    CX_EDGENEXT_KEEP_ALL,
    CX_EDGENEXT_RECOMPUTE,
    CX_EDGENEXT_NO_BACKWARD,
} cx_edgenext_keep;

typedef struct {
    cx_edgenext_config cfg;
    size_t stem_w, stem_b, stem_norm_w, stem_norm_b;
    size_t ds_norm_w[4], ds_norm_b[4], ds_w[4], ds_b[4]; /* stages 1..3 */
    size_t stage_start[4]; /* stage s's parameters (its stem or downsample, its blocks) lie
                              at offsets [stage_start[s], stage_start[s + 1]) */
    int n_blocks[4];
    cx_edgenext_block blocks[4][CX_EDGENEXT_MAX_BLOCKS];
    /* activations of the last forward (after a RECOMPUTE or NO_BACKWARD forward only the
     * features and the input are still valid) */
    int batch, height, width;
    cx_edgenext_keep keep;
    const float *input;
    float *stem_conv, *stem_saved, *stem_out;
    float *ds_norm_out[4], *ds_norm_saved[4], *ds_out[4];
    float *features[4];
} cx_edgenext;

/* Declares every parameter (timm names after `prefix`, e.g. "" or "backbone.") into
 * table and records the offsets in net. */
cx_status cx_edgenext_declare(cx_edgenext *net, const cx_edgenext_config *cfg,
                              cx_param_table *table, const char *prefix);

/* Validates an input shape (H, W multiples of 32, positive batch), naming the problem. */
cx_status cx_edgenext_check_input(const cx_edgenext *net, int batch, int channels, int height,
                                  int width);

/* Forward (edgenext_stages.c): x [B, 3, H, W] (backend memory, must stay valid until
 * backward); features land in net->features[0..3] (arena memory). `keep`: what stays for
 * backward (above). */
cx_status cx_edgenext_forward(cx_edgenext *net, cx_exec *ex, const float *x, int batch,
                              int height, int width, cx_edgenext_keep keep);

/* Backward after forward: dfeatures[s] [B, dims[s], ...] are gradients of the four
 * stage outputs; they are used as accumulators and left modified. Parameter gradients
 * accumulate into ex->grads (skipped when NULL); dx [B, 3, H, W] accumulates when not
 * NULL. After a RECOMPUTE forward each stage's activations are taken from the arena above
 * its current use, and given back when the stage is done; after a NO_BACKWARD forward it
 * fails (CX_ERUNTIME) before touching anything. */
cx_status cx_edgenext_backward(cx_edgenext *net, cx_exec *ex, float *const dfeatures[4],
                               float *dx);

/* ---- one block (edgenext_blocks.c), for the stage code ------------------------------
 * in [B, C, H, W] -> out [B, C, H, W] (out != in; the caller's buffer; NULL: the output
 * is not produced, for a recompute, whose backward never reads it). Every other buffer
 * comes from the arena and stays referenced from blk for backward. */
cx_status cx_edgenext_block_forward(cx_edgenext_block *blk, const cx_edgenext_config *cfg,
                                    cx_exec *ex, const float *in, float *out, int B, int H,
                                    int W);
/* dout [B, C, H, W] -> din (accumulated), parameter gradients into ex->grads; after the
 * block's forward, with its activations still in place. */
cx_status cx_edgenext_block_backward(cx_edgenext_block *blk, const cx_edgenext_config *cfg,
                                     cx_exec *ex, int B, int H, int W, const float *dout,
                                     float *din);

#ifdef CX_TEST_BUILD
/* Test builds only: nonzero makes backward after a RECOMPUTE forward skip the recompute
 * (it then reads whatever the arena holds), so a test can show that the gradient check
 * of checkpointing fails without it. */
extern int cx_edgenext_test_skip_recompute;
#endif

/* Spatial size of stage s's output. */
static inline int cx_edgenext_stage_h(const cx_edgenext *net, int s) { return net->height >> (s + 2); }
static inline int cx_edgenext_stage_w(const cx_edgenext *net, int s) { return net->width >> (s + 2); }

#endif
