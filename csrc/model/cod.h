/* The COD model: EdgeNeXt backbone + per-scale mixture-of-experts neck + reverse-attention
 * decoder with deep supervision, and its structure loss (docs/model.md). The PyTorch
 * twin tools/cod_twin.py is the executable spec; names, order and arithmetic follow it.
 *
 *   input  x [B, 3, H, W], H and W multiples of 32
 *   scale i = 0..3 has stride 4, 8, 16, 32: f_i [B, C_i, h_i, w_i] from the backbone
 *   neck    z_i = LN2d(conv1x1(f_i)) [B, D, h_i, w_i]; z'_i = z_i + sum_e w_e expert_e(z_i)
 *   decoder d_3 = z'_3, p_3 = head_3(d_3); k = 2, 1, 0: r = 1 - sigmoid(up(p_{k+1})),
 *           d_k = fuse_k(cat[up(d_{k+1}), z'_k * (1 + r)]), p_k = head_k(d_k)
 *   output  out_k = up(p_k) [B, 1, H, W] (logits); out_0 is the prediction
 *
 * Parameter names (the twin's, in this order): backbone.<timm name>; neck.{i}.proj.conv,
 * neck.{i}.proj.norm, neck.{i}.moe.gate, neck.{i}.moe.experts.{e}.<per type>;
 * decoder.fuse.{k}.{conv1,norm1,conv2,norm2}; decoder.heads.{k}. */
#ifndef CX_COD_H
#define CX_COD_H

#include "edgenext.h"

#define CX_COD_MAX_EXPERTS 32
/* decoder_dim D: a multiple of 4 in [4, CX_COD_MAX_DECODER_DIM] (codext/config.py has the
 * same bound). With it every parameter count (largest: the fuse conv, D x 2D x 3 x 3) and
 * fan-in fits an int with room to spare; cx_cod_add_layer checks its sizes anyway. */
#define CX_COD_MAX_DECODER_DIM 4096
/* Largest input side of a forward (cx_cod_forward also bounds batch x height x width). */
#define CX_COD_MAX_SIDE 8192
/* Largest channel count of one declared layer (3 x CX_COD_MAX_DECODER_DIM and more). */
#define CX_COD_MAX_CHANNELS 65536
#define CX_COD_XCA_HEADS 4
#define CX_COD_LN_EPS 1e-6f

/* Expert e has type e mod 7 (E > 7 cycles through the list). */
typedef enum {
    CX_EXPERT_TEXTURE,
    CX_EXPERT_LOCAL,
    CX_EXPERT_EDGE,
    CX_EXPERT_FREQUENCY,
    CX_EXPERT_CONTRAST,
    CX_EXPERT_CONTEXT,
    CX_EXPERT_ATTENTION,
    CX_EXPERT_TYPES
} cx_expert_type;

/* Offsets of a layer's weight and bias in the parameter buffer. */
typedef struct {
    size_t w, b;
} cx_wb;

/* The "1x1 conv -> LayerNorm2d -> GELU" tail shared by five expert types. */
typedef struct {
    cx_wb pw, norm;
    float *pw_out, *norm_out, *norm_saved; /* [n, D, hw] x2, LN statistics */
} cx_cod_tail;

typedef struct {
    cx_wb pw, fc1, fc2;
    float *pw_out, *gap, *fc1_out, *gelu_out, *gate; /* y [n,D,hw], [n,D], [n,D/4] x2, [n,D] */
} cx_cod_contrast;

typedef struct {
    cx_wb pools[3];
    float *pooled[3]; /* adaptive pools 1x1, 2x2, 4x4 of z: [n, D, o, o] */
} cx_cod_context;

typedef struct {
    cx_wb norm, qkv, proj;
    size_t temperature;
    float *tokens, *ln_out, *ln_saved, *qkv_out, *xca_out, *xca_saved, *proj_out; /* [n*hw, .] */
} cx_cod_attention;

typedef struct {
    cx_expert_type type;
    int dim;   /* D */
    int pw_in; /* input channels of the 1x1 conv (D, 3D, 2D or D + 3D/4) */
    union {
        cx_wb texture_dw[4];   /* depthwise 3x3, dilation 1, 2, 4, 8 */
        cx_wb local_dw;        /* depthwise 7x7 */
        cx_wb edge;            /* grouped 3x3, D -> 3D */
        cx_cod_contrast contrast;
        cx_cod_context context;
        cx_cod_attention attention;
    } u;
    cx_cod_tail tail; /* texture, local, edge, frequency, context */
    /* the last forward, on a sub-batch of n images */
    int n, h, w;
    const float *in; /* z rows [n, D, hw] */
    float *pre;      /* the 1x1 conv's input [n, pw_in, hw] */
    float *out;      /* [n, D, hw] */
} cx_cod_expert;

/* One neck scale: proj + MoE. */
typedef struct {
    int in_ch, dim, n_experts, top_k;
    cx_wb proj_conv, proj_norm, gate;
    cx_cod_expert experts[CX_COD_MAX_EXPERTS];
    /* the last forward */
    int batch, h, w;
    const float *feature;                /* f_i [B, C_i, hw] */
    float *proj_conv_out, *proj_saved;   /* [B, D, hw], LN statistics */
    float *z;                            /* proj output [B, D, hw] */
    float *gap, *gate_logits, *probs;    /* [B, D], [B, E], [B, E] */
    float *expert_weights;               /* [E, B]: weights of each expert's rows, in row order */
    float *out;                          /* z' [B, D, hw] */
    /* routing (host memory, sized by the model for the planned batch) */
    int n_rows[CX_COD_MAX_EXPERTS];      /* images expert e runs on */
    int *rows;                           /* [E, B]: their indices, increasing */
    int *chosen;                         /* [B, k] expert ids, largest gate first (sparse) */
    float *probs_host;                   /* [B, E] */
    double *weights_host;                /* [B, E] applied weights (0 where not chosen) */
    double *dweights_host;               /* [B, E] their gradients (backward) */
    float *transfer_host;                /* [E, B] staging for uploads and downloads */
    double balance;                      /* E sum_e f_e P_e (sparse), else 0 */
} cx_cod_neck;

typedef struct {
    int dim;
    cx_wb conv1[3], norm1[3], conv2[3], norm2[3], heads[4];
    /* the last forward; level k = 0..2 makes d_k at neck scale k */
    int batch, h[4], w[4];
    const float *necks[4];
    float *sig[3], *one_plus_r[3];       /* [B, 1, hw_k] */
    float *cat[3];                       /* [B, 2D, hw_k] */
    float *c1[3], *n1[3], *n1_saved[3], *g1[3], *c2[3], *n2[3], *n2_saved[3];
    float *d[4];                         /* d_k [B, D, hw_k]; d[3] = necks[3] */
    float *logits[4];                    /* p_k [B, 1, hw_k] */
} cx_cod_decoder;

typedef struct {
    char backbone[48];
    int decoder_dim, num_experts, top_k; /* top_k 0: dense */
    float ds_weight, balance_weight;
} cx_cod_config;

/* Loss parts of the last cx_cod_loss (host, double): batch means and per-image values. */
typedef struct {
    double total, loss[4], balance;
    double *wbce[4], *wiou[4];           /* [B] each (model-owned host memory) */
} cx_cod_loss_parts;

/* Forward modes: what a forward computes and keeps, chosen at forward time because the
 * memory plan (and what backward may do) depends on it.
 *   PREDICT           out_0 only; the backbone keeps nothing (no backward follows).
 *   TRAIN             the four outputs and everything any backward reads.
 *   TRAIN_HEAD        stage 1 (frozen backbone): as TRAIN, but the backbone keeps only the
 *                     features the neck reads; backward must pass train_backbone 0.
 *   TRAIN_CHECKPOINT  gradient checkpointing: the backbone keeps its input and the features;
 *                     backward recomputes each stage just before that stage's backward
 *                     (cx_edgenext_keep in edgenext.h). Gradients are bit-identical to
 *                     TRAIN's. */
enum { CX_COD_PREDICT = 0, CX_COD_TRAIN = 1, CX_COD_TRAIN_HEAD = 2, CX_COD_TRAIN_CHECKPOINT = 3 };

/* Whether `mode` is a training mode (loss and backward may follow). */
static inline int cx_cod_mode_trains(int mode) {
    return mode == CX_COD_TRAIN || mode == CX_COD_TRAIN_HEAD || mode == CX_COD_TRAIN_CHECKPOINT;
}
/* The training mode of a step: stage 1 (train_backbone 0) TRAIN_HEAD, stage 2 TRAIN or
 * (checkpointing) TRAIN_CHECKPOINT. */
static inline int cx_cod_train_mode(int train_backbone, int checkpointing) {
    return !train_backbone ? CX_COD_TRAIN_HEAD
                           : checkpointing ? CX_COD_TRAIN_CHECKPOINT : CX_COD_TRAIN;
}

typedef struct {
    cx_cod_config cfg;
    cx_edgenext backbone;
    cx_cod_neck neck[4];
    cx_cod_decoder decoder;
    cx_param_table table;
    size_t backbone_floats;  /* parameters [0, backbone_floats) are the backbone's */
    size_t neck_start[4], decoder_start; /* where neck i's and the decoder's parameters begin
                                            (the table is backbone, necks 0..3, decoder) */
    /* The backward's hook (arena.h, cx_grads_final_fn), or NULL; the trainer sets it for
     * the step's last micro-batch (cx_cod_set_grads_final). */
    cx_grads_final_fn grads_final;
    void *grads_final_ctx;
    cx_backend *be;
    float *params, *grads;   /* table.total floats each */
    cx_arena arena;
    int plan_batch, plan_height, plan_width, plan_mode;
    int routing_capacity;    /* batch the host routing buffers hold */
    void *routing_memory;
    /* the last forward / loss */
    int batch, height, width, mode, have_forward, have_loss;
    float *input, *target;   /* [B, 3, H, W], [B, 1, H, W] (arena) */
    float *outputs[4];       /* out_k [B, 1, H, W]; PREDICT mode computes only out_0 */
    float *loss_values[4], *loss_saved[4];
    size_t after_forward, after_loss; /* arena marks */
    cx_cod_loss_parts parts;
    double *parts_memory;
} cx_cod_model;

/* ---- model (cod_model.c) ---------------------------------------------------------- */
/* Validates cfg, declares every parameter and initialises them from seed: the backbone as
 * timm (as cx_backbone with the same seed), the rest as PyTorch's defaults (gates zero,
 * edge filters Sobel-x, Sobel-y, Laplacian). */
cx_status cx_cod_create(const cx_cod_config *cfg, uint64_t seed, cx_backend *be,
                        cx_cod_model **out);
void cx_cod_free(cx_cod_model *m);
/* x_host [B, 3, H, W]. mode: one of the forward modes above. Plans the arena when the
 * shape or mode differs from the last plan's (the arena only grows: its capacity is the
 * largest plan so far). Sparse routing downloads the gate probabilities (one small host
 * sync per scale). */
cx_status cx_cod_forward(cx_cod_model *m, const float *x_host, int batch, int height,
                         int width, int mode);
/* After a TRAIN forward: y_host [B, 1, H, W] in {0, 1}. Fills m->parts (and *parts when
 * not NULL): total = L0 + ds (L1 + L2 + L3) + bw balance, L_k the batch mean of wbce+wiou. */
cx_status cx_cod_loss(cx_cod_model *m, const float *y_host, cx_cod_loss_parts *parts);
/* The same with the batch already in the backend's memory (the trainer's copy-stream
 * uploads, csrc/train/prefetch.h): copied on the backend's stream instead of uploaded.
 * The caller orders the upload before them (cuda_abi.h wait_copy). */
cx_status cx_cod_forward_device(cx_cod_model *m, const float *x_device, int batch, int height,
                                int width, int mode);
cx_status cx_cod_loss_device(cx_cod_model *m, const float *y_device, cx_cod_loss_parts *parts);
/* After cx_cod_loss: ACCUMULATES loss_scale * d total / d params into m->grads.
 * train_backbone 0 (stage 1): no backward through the backbone at all; its gradients are
 * not touched. train_backbone 1 after a TRAIN_HEAD forward fails (CX_ERUNTIME) before
 * touching any gradient. Sparse mode downloads the gate-weight gradients (one host sync
 * per scale). May be called again after the same loss (gradients add up). */
cx_status cx_cod_backward(cx_cod_model *m, float loss_scale, int train_backbone);
/* The trainer's forward and backward: the same passes, queued without waiting for them
 * (arena.h cx_exec_check) on a backend that can tell call-time errors without a wait (CUDA);
 * errors the device meets while running them come at the next wait (the loss's read-back,
 * the optimizer's). x: host memory, or (x_on_device) the backend's, as above. The public
 * calls above wait, so that their errors name their pass. */
cx_status cx_cod_forward_queued(cx_cod_model *m, const float *x, int x_on_device, int batch,
                                int height, int width, int mode);
/* The loss, its read-back queued into record [cx_cod_loss_record_floats(B)] (pinned host
 * memory on a GPU: a copy into pageable memory waits), filled once the stream gets there;
 * *balance: the routing balance of the forward (host). After a wait, parts_from turns the
 * record into m->parts (and *parts when not NULL), as cx_cod_loss fills them. */
static inline size_t cx_cod_loss_record_floats(int batch) { return (size_t)20 * (size_t)batch; }
cx_status cx_cod_loss_queued(cx_cod_model *m, const float *y, int y_on_device, float *record,
                             double *balance);
void cx_cod_loss_parts_from(cx_cod_model *m, const float *record, int batch, double balance,
                            cx_cod_loss_parts *parts);
cx_status cx_cod_backward_queued(cx_cod_model *m, float loss_scale, int train_backbone);
/* The hook later backward passes call as their gradients become final, from the end of the
 * parameter buffer down (decoder, necks 3..0, backbone stages 3..0); fn NULL: none. */
void cx_cod_set_grads_final(cx_cod_model *m, cx_grads_final_fn fn, void *ctx);
void cx_cod_zero_grads(cx_cod_model *m);
/* After a forward: probabilities sigmoid(out_0) [B, 1, H, W] into probs_host. A logit
 * that is not finite fails (CX_ERUNTIME, counting them): sigmoid would turn it into a
 * plausible 0 or 1 (or NaN). */
cx_status cx_cod_probabilities(cx_cod_model *m, float *probs_host);
/* Bytes of the arena (its capacity: the largest plan so far). */
size_t cx_cod_arena_bytes(const cx_cod_model *m);
/* Bytes of activation memory a forward of (batch, height, width, mode) needs, with loss
 * and backward in a training mode (TRAIN_HEAD: backward without the backbone): the
 * planner's high-water mark, measured on the planning backend. Reserves nothing; only the
 * host routing buffers grow to the batch. Forgets the last forward (as a new plan does). */
cx_status cx_cod_plan_bytes(cx_cod_model *m, int batch, int height, int width, int mode,
                            size_t *bytes);

/* ---- neck (cod_neck.c) ------------------------------------------------------------- */
cx_status cx_cod_neck_declare(cx_cod_neck *neck, int scale, int in_ch, int dim, int n_experts,
                              int top_k, cx_param_table *table);
/* Writes the edge experts' Sobel / Laplacian filters into host parameter values. */
void cx_cod_neck_init_edges(const cx_cod_neck *neck, float *host_params);
/* f [B, C_i, h, w] -> neck->out [B, D, h, w]. Host routing buffers must hold B images. */
cx_status cx_cod_neck_forward(cx_cod_neck *neck, cx_exec *ex, const float *f, int batch, int h,
                              int w);
/* dout [B, D, hw] -> dfeature [B, C_i, hw] (accumulated; NULL: not wanted). dbalance is
 * d loss / d balance of this scale (sparse mode). */
cx_status cx_cod_neck_backward(cx_cod_neck *neck, cx_exec *ex, const float *dout,
                               double dbalance, float *dfeature);

/* ---- experts (cod_experts.c) ------------------------------------------------------- */
cx_status cx_cod_expert_declare(cx_cod_expert *e, cx_expert_type type, int dim,
                                cx_param_table *table, const char *prefix);
/* z [n, D, h, w] -> expert->out [n, D, h, w] */
cx_status cx_cod_expert_forward(cx_cod_expert *e, cx_exec *ex, const float *z, int n, int h,
                                int w);
/* dout [n, D, hw] -> dz (accumulated) */
cx_status cx_cod_expert_backward(cx_cod_expert *e, cx_exec *ex, const float *dout, float *dz);

/* ---- decoder (cod_decoder.c) ------------------------------------------------------- */
cx_status cx_cod_decoder_declare(cx_cod_decoder *dec, int dim, cx_param_table *table);
/* necks[k] [B, D, h_k, w_k] -> dec->logits[k] [B, 1, h_k, w_k] */
cx_status cx_cod_decoder_forward(cx_cod_decoder *dec, cx_exec *ex, float *const necks[4],
                                 int batch, const int h[4], const int w[4]);
/* dlogits[k] [B, 1, hw_k] (used as accumulators, left modified) -> dnecks[k] (accumulated) */
cx_status cx_cod_decoder_backward(cx_cod_decoder *dec, cx_exec *ex, float *const dlogits[4],
                                  float *const dnecks[4]);

/* ---- helpers shared by the COD files ------------------------------------------------ */
/* Adds "<prefix><leaf>.weight" / ".bias" of a conv [out, in/groups, k, k] or linear
 * (k 0: [out, in]) with PyTorch's default init and the twin's decay rule. */
cx_status cx_cod_add_layer(cx_param_table *table, const char *prefix, const char *leaf,
                           int out_ch, int in_per_group, int k, cx_wb *wb);
/* LayerNorm weight (ones) and bias (zeros), no decay. */
cx_status cx_cod_add_norm(cx_param_table *table, const char *prefix, const char *leaf, int dim,
                          cx_wb *wb);

static inline cx_conv_shape cx_cod_conv(int batch, int in_ch, int h, int w, int out_ch, int k,
                                        int dilation, int groups) {
    cx_conv_shape s = {.batch = batch, .in_ch = in_ch, .in_h = h, .in_w = w, .out_ch = out_ch,
                       .k_h = k, .k_w = k, .stride = 1, .pad_h = dilation * (k / 2),
                       .pad_w = dilation * (k / 2), .dilation = dilation, .groups = groups};
    return s;
}

#endif
