/* The op interface: every op the models use, behind a table of function pointers.
 *
 * Model code (backbone, neck, decoder, loss) calls ops only through a cx_backend, so
 * one model definition runs on the CPU backend (csrc/cpu/) and the CUDA backend
 * (kernels/) alike. Pointers are backend memory (host memory for the CPU backend).
 * Each op is declared once, in op_list.h, with its shapes; the table's fields, op ids
 * and names below are generated from that list.
 *
 * Conventions, shared by every op:
 *   - float32, contiguous, NCHW for images; "rows x cols" for channels-last data.
 *   - Forward ops overwrite their outputs.
 *   - Backward ops ACCUMULATE (+=) into every gradient they produce: input gradients
 *     and parameter gradients alike. Callers zero gradient buffers once; branches,
 *     residuals and shared parameters then need no special handling. Any gradient
 *     pointer may be NULL when that gradient is not wanted (frozen parameters,
 *     network inputs).
 *   - Ops that keep state between forward and backward (LayerNorm statistics,
 *     attention probabilities) take a `saved` buffer whose size in floats is given by
 *     the matching *_saved_floats() function; forward fills it, backward reads it.
 *   - Ops return nothing: shapes are validated by the model; an op that still fails
 *     (scratch memory, a device error) records the backend's first error, which sync()
 *     reports (CPU: cpu/cpu_error.h). Outputs are unspecified until sync() says CX_OK.
 *   - Results must not depend on the thread count (see cx_parallel_for in cx.h).
 */
#ifndef CX_OPS_H
#define CX_OPS_H

#include "../core/cx.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cx_backend cx_backend;

/* ---- convolution ----------------------------------------------------------------
 * x [batch, in_ch, in_h, in_w], w [out_ch, in_ch/groups, k_h, k_w], bias [out_ch] or NULL
 * y [batch, out_ch, out_h, out_w] with
 *   out_h = (in_h + 2*pad_h - dilation*(k_h-1) - 1) / stride + 1   (likewise out_w)
 * Zero padding. Group g uses input channels [g*in_ch/groups, (g+1)*in_ch/groups) and
 * produces outputs [g*out_ch/groups, (g+1)*out_ch/groups) (PyTorch's order: with
 * groups == in_ch and out_ch = m*in_ch, input channel c feeds outputs m*c .. m*c+m-1).
 * groups == in_ch == out_ch is depthwise and takes a fast path. */
typedef struct {
    int batch, in_ch, in_h, in_w;
    int out_ch, k_h, k_w;
    int stride, pad_h, pad_w, dilation, groups;
} cx_conv_shape;

static inline int cx_conv_out_h(const cx_conv_shape *s) {
    return (s->in_h + 2 * s->pad_h - s->dilation * (s->k_h - 1) - 1) / s->stride + 1;
}
static inline int cx_conv_out_w(const cx_conv_shape *s) {
    return (s->in_w + 2 * s->pad_w - s->dilation * (s->k_w - 1) - 1) / s->stride + 1;
}

/* ---- pooling and resizing ---------------------------------------------------------
 * Pooling and resizing act on each of `planes` = batch*channels planes independently.
 * avgpool2d: square window k, stride, zero padding pad; count_include_pad as PyTorch.
 *   x [planes, in_h, in_w] -> y [planes, out_h, out_w], out = (in + 2*pad - k)/stride + 1
 * adaptive_avgpool2d: PyTorch's bins [floor(i*in/out), ceil((i+1)*in/out)).
 * resize_bilinear: align_corners=False, src = (dst + 0.5) * in/out - 0.5, clamped at 0. */
typedef struct {
    int planes, in_h, in_w, out_h, out_w;
    int k, stride, pad, count_include_pad;
} cx_pool_shape;

/* Op ids, one per line of op_list.h: CX_OP_conv2d_forward, ... */
typedef enum {
#define CX_OP(name, params) CX_OP_##name,
#include "op_list.h"
#undef CX_OP
    CX_OP_COUNT
} cx_op_id;

/* "conv2d_forward" for CX_OP_conv2d_forward; NULL for an id out of range. */
const char *cx_op_name(cx_op_id op);

/* A set of ops (which ops a model calls, which a backend lacks). */
typedef struct {
    unsigned char has[CX_OP_COUNT];
} cx_op_set;

struct cx_backend {
    const char *name; /* "cpu", "cuda" or "plan" */
    void *impl;       /* backend-private state (streams, handles, first error) */

    /* ---- memory ---- */
    void *(*alloc)(cx_backend *be, size_t bytes); /* NULL on failure */
    void (*free)(cx_backend *be, void *ptr);
    void (*zero)(cx_backend *be, float *ptr, size_t n);
    void (*copy)(cx_backend *be, float *dst, const float *src, size_t n);     /* device to device */
    void (*upload)(cx_backend *be, float *dst, const float *host, size_t n);  /* host to device */
    void (*download)(cx_backend *be, float *host, const float *src, size_t n);/* device to host */
    cx_status (*sync)(cx_backend *be); /* waits for queued work; reports the first error */
    /* The code of the first error an op recorded since the last sync (CX_OK: none so far),
     * without waiting and without reporting or clearing it: the errors an op finds when it
     * is called (out of memory, a failed launch or library call). NULL where every op runs
     * to completion when called (the CPU backend): sync is then as cheap. */
    cx_status (*pending)(cx_backend *be);

    /* 1 when the backend implements `op`. Every op field is callable either way (never
     * NULL): an op a backend lacks records an error naming it, reported by sync(). Ask
     * before running: cx_backend_check_ops() does for a whole model. */
    int (*supports)(const cx_backend *be, cx_op_id op);

    /* ---- the ops: one field per line of op_list.h, where shapes are documented ---- */
#define CX_OP(name, params) void(*name) params;
#include "op_list.h"
#undef CX_OP
};

/* CX_OK when `be` supports every op in `needed`; else CX_ERUNTIME with one message that
 * names `what` (e.g. "the COD model"), the backend and every missing op. */
cx_status cx_backend_check_ops(const cx_backend *be, const cx_op_set *needed, const char *what);

/* Sizes of `saved` buffers, in floats (the same for every backend). */
static inline size_t cx_structure_loss_saved_floats(int batch, int h, int w) {
    return (size_t)batch * ((size_t)h * (size_t)w + 4);
}
static inline size_t cx_layernorm_saved_floats(int rows) { return 2 * (size_t)rows; }
static inline size_t cx_layernorm2d_saved_floats(int batch, int hw) {
    return 2 * (size_t)batch * (size_t)hw;
}
static inline size_t cx_l2norm_saved_floats(int rows) { return (size_t)rows; }
/* XCA keeps, per (batch, head): the q and k norms [head_dim] each and the softmax
 * output [head_dim, head_dim]. */
static inline size_t cx_xca_saved_floats(int batch, int tokens, int channels, int heads) {
    (void)tokens;
    size_t head_dim = (size_t)(channels / heads);
    return (size_t)batch * (size_t)heads * (2 * head_dim + head_dim * head_dim);
}

/* The CPU backend (csrc/cpu/backend_cpu.c). Always available. */
cx_backend *cx_backend_cpu(void);
/* The planning backend (csrc/ops/backend_null.c): every op is a no-op. */
cx_backend *cx_backend_null(void);
/* A planning backend that also records in *used every op called on it (a model learns
 * which ops it needs by running its passes on it). `be` is caller-owned. */
void cx_backend_null_recording(cx_backend *be, cx_op_set *used);

#ifdef __cplusplus
}
#endif
#endif
