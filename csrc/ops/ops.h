/* The op interface: every op the models use, behind a table of function pointers.
 *
 * Model code (backbone, neck, decoder, loss) calls ops only through a cx_backend, so
 * one model definition runs on the CPU backend (csrc/cpu/) and the CUDA backend
 * (kernels/) alike. Pointers are backend memory (host memory for the CPU backend).
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

struct cx_backend {
    const char *name; /* "cpu" or "cuda" */
    void *impl;       /* backend-private state (streams, handles, first error) */

    /* ---- memory ---- */
    void *(*alloc)(cx_backend *be, size_t bytes); /* NULL on failure */
    void (*free)(cx_backend *be, void *ptr);
    void (*zero)(cx_backend *be, float *ptr, size_t n);
    void (*copy)(cx_backend *be, float *dst, const float *src, size_t n);     /* device to device */
    void (*upload)(cx_backend *be, float *dst, const float *host, size_t n);  /* host to device */
    void (*download)(cx_backend *be, float *host, const float *src, size_t n);/* device to host */
    cx_status (*sync)(cx_backend *be); /* waits for queued work; reports the first error */

    /* ---- convolution (see cx_conv_shape) ---- */
    void (*conv2d_forward)(cx_backend *be, const cx_conv_shape *s, const float *x,
                           const float *w, const float *bias, float *y);
    /* dy [batch, out_ch, out_h, out_w]; dx, dw, dbias accumulate (each may be NULL) */
    void (*conv2d_backward)(cx_backend *be, const cx_conv_shape *s, const float *x,
                            const float *w, const float *dy, float *dx, float *dw,
                            float *dbias);

    /* ---- linear (PyTorch nn.Linear layout) ----
     * x [rows, in_features], w [out_features, in_features], bias [out_features] or NULL
     * y [rows, out_features] = x @ w^T + bias */
    void (*linear_forward)(cx_backend *be, int rows, int in_features, int out_features,
                           const float *x, const float *w, const float *bias, float *y);
    void (*linear_backward)(cx_backend *be, int rows, int in_features, int out_features,
                            const float *x, const float *w, const float *dy, float *dx,
                            float *dw, float *dbias);

    /* ---- normalisation ----
     * layernorm: over the last dim; x, y [rows, cols]; weight, bias [cols]; eps 1e-6 in
     *   EdgeNeXt. saved: layernorm_saved_floats(rows) = 2*rows (mean, 1/std).
     * layernorm2d: over channels at each pixel of NCHW; x, y [batch, channels, hw];
     *   weight, bias [channels]; saved: 2*batch*hw. */
    void (*layernorm_forward)(cx_backend *be, int rows, int cols, float eps, const float *x,
                              const float *weight, const float *bias, float *y, float *saved);
    void (*layernorm_backward)(cx_backend *be, int rows, int cols, const float *x,
                               const float *weight, const float *saved, const float *dy,
                               float *dx, float *dweight, float *dbias);
    void (*layernorm2d_forward)(cx_backend *be, int batch, int channels, int hw, float eps,
                                const float *x, const float *weight, const float *bias,
                                float *y, float *saved);
    void (*layernorm2d_backward)(cx_backend *be, int batch, int channels, int hw,
                                 const float *x, const float *weight, const float *saved,
                                 const float *dy, float *dx, float *dweight, float *dbias);
    /* l2 normalise over the last dim: y = x / max(||x||_2, eps); x, y [rows, cols];
     * saved: rows floats (the norms). */
    void (*l2norm_forward)(cx_backend *be, int rows, int cols, float eps, const float *x,
                           float *y, float *saved);
    void (*l2norm_backward)(cx_backend *be, int rows, int cols, float eps, const float *x,
                            const float *saved, const float *dy, float *dx);

    /* ---- pointwise; x, y [n] ---- */
    void (*gelu_forward)(cx_backend *be, size_t n, const float *x, float *y); /* exact erf */
    void (*gelu_backward)(cx_backend *be, size_t n, const float *x, const float *dy, float *dx);
    void (*sigmoid_forward)(cx_backend *be, size_t n, const float *x, float *y);
    /* uses the forward output y */
    void (*sigmoid_backward)(cx_backend *be, size_t n, const float *y, const float *dy, float *dx);
    /* softmax over the last dim; x, y [rows, cols]; backward uses the output y */
    void (*softmax_forward)(cx_backend *be, int rows, int cols, const float *x, float *y);
    void (*softmax_backward)(cx_backend *be, int rows, int cols, const float *y,
                             const float *dy, float *dx);
    /* y = a + b */
    void (*add)(cx_backend *be, size_t n, const float *a, const float *b, float *y);
    /* y += alpha * x (also the backward of add, scale and copies) */
    void (*axpy)(cx_backend *be, size_t n, float alpha, const float *x, float *y);
    /* y = a * b; backward: da += dy * b, db += dy * a */
    void (*mul_forward)(cx_backend *be, size_t n, const float *a, const float *b, float *y);
    void (*mul_backward)(cx_backend *be, size_t n, const float *a, const float *b,
                         const float *dy, float *da, float *db);
    /* y = alpha * x + beta (beta lets 1 - sigmoid and 1 + r be one op) */
    void (*affine)(cx_backend *be, size_t n, float alpha, float beta, const float *x, float *y);

    /* ---- broadcast products; x, y [outer, mid, inner] ----
     * scale_mid: y[o,m,i] = x[o,m,i] * s[m]. Channel scale of NHWC data (outer = rows,
     *   mid = C, inner = 1), of NCHW data (outer = B, mid = C, inner = HW), per-sample
     *   scale (outer = 1, mid = B, inner = C*H*W). ds [mid] accumulates sum dy*x. */
    void (*scale_mid_forward)(cx_backend *be, int outer, int mid, int inner, const float *x,
                              const float *s, float *y);
    void (*scale_mid_backward)(cx_backend *be, int outer, int mid, int inner, const float *x,
                               const float *s, const float *dy, float *dx, float *ds);
    /* scale_outer_inner: y[o,m,i] = x[o,m,i] * s[o,i]: a per-pixel map s [B,1,HW]
     *   broadcast over channels (outer = B, mid = C, inner = HW). */
    void (*scale_outer_inner_forward)(cx_backend *be, int outer, int mid, int inner,
                                      const float *x, const float *s, float *y);
    void (*scale_outer_inner_backward)(cx_backend *be, int outer, int mid, int inner,
                                       const float *x, const float *s, const float *dy,
                                       float *dx, float *ds);

    /* ---- layout ----
     * transpose: x [batch, a, b] -> y [batch, b, a] (NCHW <-> NHWC with a = C, b = HW).
     * Its backward is transpose(dy) accumulated: transpose_accumulate. */
    void (*transpose)(cx_backend *be, int batch, int a, int b, const float *x, float *y);
    void (*transpose_accumulate)(cx_backend *be, int batch, int a, int b, const float *x,
                                 float *y);
    /* Channel-block copy for concat and split of NCHW tensors:
     *   dst[b, dst_offset + c, :] (=|+=) src[b, src_offset + c, :]  for c < n_channels
     * src [batch, src_channels, hw], dst [batch, dst_channels, hw]. */
    void (*copy_channels)(cx_backend *be, int batch, int hw, int n_channels,
                          const float *src, int src_channels, int src_offset,
                          float *dst, int dst_channels, int dst_offset, int accumulate);

    /* ---- pooling and resizing (see cx_pool_shape); backward accumulates dx ---- */
    void (*avgpool2d_forward)(cx_backend *be, const cx_pool_shape *s, const float *x, float *y);
    void (*avgpool2d_backward)(cx_backend *be, const cx_pool_shape *s, const float *dy, float *dx);
    void (*adaptive_avgpool2d_forward)(cx_backend *be, const cx_pool_shape *s, const float *x,
                                       float *y);
    void (*adaptive_avgpool2d_backward)(cx_backend *be, const cx_pool_shape *s,
                                        const float *dy, float *dx);
    /* mean over hw: x [planes, hw] -> y [planes] */
    void (*global_avgpool_forward)(cx_backend *be, int planes, int hw, const float *x, float *y);
    void (*global_avgpool_backward)(cx_backend *be, int planes, int hw, const float *dy, float *dx);
    void (*resize_bilinear_forward)(cx_backend *be, const cx_pool_shape *s, const float *x,
                                    float *y);
    void (*resize_bilinear_backward)(cx_backend *be, const cx_pool_shape *s, const float *dy,
                                     float *dx);

    /* ---- attention ----
     * Cross-covariance attention core (EdgeNeXt's XCA between its qkv and proj linears):
     *   qkv [batch, tokens, 3*channels], channel index (part*heads + head)*head_dim + d
     *       with part 0 = q, 1 = k, 2 = v and head_dim = channels/heads
     *   temperature [heads]
     *   out [batch, tokens, channels], channel index head*head_dim + d
     * q and k are L2-normalised over the tokens (eps 1e-12), attn = softmax over the last
     * dim of (q k^T) * temperature[head] (head_dim x head_dim), out = attn v.
     * saved: xca_saved_floats(batch, tokens, channels, heads). */
    void (*xca_forward)(cx_backend *be, int batch, int tokens, int channels, int heads,
                        const float *qkv, const float *temperature, float *out, float *saved);
    void (*xca_backward)(cx_backend *be, int batch, int tokens, int channels, int heads,
                         const float *qkv, const float *temperature, const float *saved,
                         const float *dout, float *dqkv, float *dtemperature);
    /* ---- losses ----
     * Structure loss of the COD decoder, per image (docs/model.md):
     *   logits, target [batch, h*w] (one plane per image; target in {0, 1})
     *   weight = 1 + 5*|avgpool31(target) - target| (stride 1, pad 15, count_include_pad)
     *   p = sigmoid(logits); bce = softplus(logits) - target*logits (stable form)
     *   wbce = sum(weight*bce) / sum(weight)
     *   wiou = 1 - (sum(weight*p*target) + 1) / (sum(weight*(p + target)) - sum(weight*p*target) + 1)
     *   loss[b] = wbce + wiou
     * saved: structure_loss_saved_floats(batch, h, w): the weight map [batch, h*w], then
     *   per image four sums [batch, 4]: sum(weight), sum(weight*bce), sum(weight*p*target),
     *   sum(weight*(p + target)) (the model reads them to report wbce and wiou).
     * Backward: dlogits (accumulate) from dloss [batch]. */
    void (*structure_loss_forward)(cx_backend *be, int batch, int h, int w, const float *logits,
                                   const float *target, float *loss, float *saved);
    void (*structure_loss_backward)(cx_backend *be, int batch, int h, int w,
                                    const float *logits, const float *target,
                                    const float *saved, const float *dloss, float *dlogits);

    /* Fourier positional encoding (EdgeNeXt's PositionalEncodingFourier before its 1x1
     * projection): out [2*hidden, h, w]: channels [0, hidden) from the row coordinate,
     * [hidden, 2*hidden) from the column; y = (1..h)/(h + 1e-6)*2pi; dim_t[i] =
     * temperature^(2*floor(i/2)/hidden); sin on even, cos on odd channels. A constant
     * of the shape: it has no backward. */
    void (*posenc_fourier)(cx_backend *be, int hidden, float temperature, int h, int w,
                           float *out);
};

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

#ifdef __cplusplus
}
#endif
#endif
