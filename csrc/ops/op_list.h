/* The op table: every compute op of cx_backend, declared once.
 *
 * Each CX_OP(name, parameters) line is one op: its field of cx_backend, its id
 * CX_OP_<name> and its name string "<name>" (ops.h), the planning backend's no-op
 * (backend_null.c), the CPU prototype cpu_<name> (cpu/cpu_ops.h) and the CUDA prototype
 * cu_<name> (kernels/common.cuh) all come from it. Every op returns void and takes the
 * backend first. Shapes and conventions are written next to each op; the rules shared by
 * every op are at the top of ops.h.
 *
 * This file has no include guard on purpose: include it with CX_OP defined, e.g.
 *     #define CX_OP(name, params) void cpu_##name params;
 *     #include "op_list.h"
 *     #undef CX_OP
 * Adding an op: docs/adding-an-op.md. */

/* ---- convolution (see cx_conv_shape in ops.h) ----
 * x [batch, in_ch, in_h, in_w], w [out_ch, in_ch/groups, k_h, k_w], bias [out_ch] or NULL,
 * y [batch, out_ch, out_h, out_w]. Backward: dy like y; dx, dw, dbias accumulate (each may
 * be NULL). */
CX_OP(conv2d_forward, (cx_backend *be, const cx_conv_shape *s, const float *x, const float *w,
                       const float *bias, float *y))
CX_OP(conv2d_backward, (cx_backend *be, const cx_conv_shape *s, const float *x,
                        const float *w, const float *dy, float *dx, float *dw, float *dbias))

/* ---- linear (PyTorch nn.Linear layout) ----
 * x [rows, in_features], w [out_features, in_features], bias [out_features] or NULL
 * y [rows, out_features] = x @ w^T + bias. Backward: dy like y; dx, dw, dbias accumulate. */
CX_OP(linear_forward, (cx_backend *be, int rows, int in_features, int out_features,
                       const float *x, const float *w, const float *bias, float *y))
CX_OP(linear_backward, (cx_backend *be, int rows, int in_features, int out_features,
                        const float *x, const float *w, const float *dy, float *dx, float *dw,
                        float *dbias))

/* ---- normalisation ----
 * layernorm: over the last dim; x, y [rows, cols]; weight, bias [cols]; eps 1e-6 in
 *   EdgeNeXt. saved: cx_layernorm_saved_floats(rows) = [2, rows] (mean, then 1/std). */
CX_OP(layernorm_forward, (cx_backend *be, int rows, int cols, float eps, const float *x,
                          const float *weight, const float *bias, float *y, float *saved))
CX_OP(layernorm_backward, (cx_backend *be, int rows, int cols, const float *x,
                           const float *weight, const float *saved, const float *dy, float *dx,
                           float *dweight, float *dbias))
/* layernorm2d: over channels at each pixel of NCHW; x, y [batch, channels, hw];
 *   weight, bias [channels]; saved: cx_layernorm2d_saved_floats = [2, batch*hw]. */
CX_OP(layernorm2d_forward, (cx_backend *be, int batch, int channels, int hw, float eps,
                            const float *x, const float *weight, const float *bias, float *y,
                            float *saved))
CX_OP(layernorm2d_backward, (cx_backend *be, int batch, int channels, int hw, const float *x,
                             const float *weight, const float *saved, const float *dy,
                             float *dx, float *dweight, float *dbias))
/* l2norm over the last dim: y = x / max(||x||_2, eps); x, y [rows, cols];
 *   saved: cx_l2norm_saved_floats(rows) = [rows] (the norms). */
CX_OP(l2norm_forward, (cx_backend *be, int rows, int cols, float eps, const float *x, float *y,
                       float *saved))
CX_OP(l2norm_backward, (cx_backend *be, int rows, int cols, float eps, const float *x,
                        const float *saved, const float *dy, float *dx))

/* ---- pointwise; x, y, a, b [n] ---- */
/* gelu: exact erf form */
CX_OP(gelu_forward, (cx_backend *be, size_t n, const float *x, float *y))
CX_OP(gelu_backward, (cx_backend *be, size_t n, const float *x, const float *dy, float *dx))
/* sigmoid; the backward takes the forward output y */
CX_OP(sigmoid_forward, (cx_backend *be, size_t n, const float *x, float *y))
CX_OP(sigmoid_backward, (cx_backend *be, size_t n, const float *y, const float *dy, float *dx))
/* softmax over the last dim; x, y [rows, cols]; the backward takes the output y */
CX_OP(softmax_forward, (cx_backend *be, int rows, int cols, const float *x, float *y))
CX_OP(softmax_backward, (cx_backend *be, int rows, int cols, const float *y, const float *dy,
                         float *dx))
/* y = a + b */
CX_OP(add, (cx_backend *be, size_t n, const float *a, const float *b, float *y))
/* y += alpha * x (also the backward of add, affine and copies) */
CX_OP(axpy, (cx_backend *be, size_t n, float alpha, const float *x, float *y))
/* y = a * b; backward: da += dy * b, db += dy * a */
CX_OP(mul_forward, (cx_backend *be, size_t n, const float *a, const float *b, float *y))
CX_OP(mul_backward, (cx_backend *be, size_t n, const float *a, const float *b, const float *dy,
                     float *da, float *db))
/* y = alpha * x + beta (beta lets 1 - sigmoid and 1 + r be one op) */
CX_OP(affine, (cx_backend *be, size_t n, float alpha, float beta, const float *x, float *y))

/* ---- broadcast products; x, y [outer, mid, inner] ----
 * scale_mid: y[o,m,i] = x[o,m,i] * s[m]. Channel scale of NHWC data (outer = rows,
 *   mid = C, inner = 1), of NCHW data (outer = B, mid = C, inner = HW), per-sample
 *   scale (outer = 1, mid = B, inner = C*H*W). ds [mid] accumulates sum dy*x. */
CX_OP(scale_mid_forward, (cx_backend *be, int outer, int mid, int inner, const float *x,
                          const float *s, float *y))
CX_OP(scale_mid_backward, (cx_backend *be, int outer, int mid, int inner, const float *x,
                           const float *s, const float *dy, float *dx, float *ds))
/* scale_outer_inner: y[o,m,i] = x[o,m,i] * s[o,i]: a per-pixel map s [B,1,HW]
 *   broadcast over channels (outer = B, mid = C, inner = HW). ds [outer, inner]. */
CX_OP(scale_outer_inner_forward, (cx_backend *be, int outer, int mid, int inner,
                                  const float *x, const float *s, float *y))
CX_OP(scale_outer_inner_backward, (cx_backend *be, int outer, int mid, int inner,
                                   const float *x, const float *s, const float *dy, float *dx,
                                   float *ds))

/* ---- layout ----
 * transpose: x [batch, a, b] -> y [batch, b, a] (NCHW <-> NHWC with a = C, b = HW).
 * Its backward is transpose(dy) accumulated: transpose_accumulate (y += x^T). */
CX_OP(transpose, (cx_backend *be, int batch, int a, int b, const float *x, float *y))
CX_OP(transpose_accumulate, (cx_backend *be, int batch, int a, int b, const float *x, float *y))
/* Channel-block copy for concat and split of NCHW tensors:
 *   dst[b, dst_offset + c, :] (=|+=) src[b, src_offset + c, :]  for c < n_channels
 * src [batch, src_channels, hw], dst [batch, dst_channels, hw]. */
CX_OP(copy_channels, (cx_backend *be, int batch, int hw, int n_channels, const float *src,
                      int src_channels, int src_offset, float *dst, int dst_channels,
                      int dst_offset, int accumulate))

/* ---- pooling and resizing (see cx_pool_shape in ops.h) ----
 * x [planes, in_h, in_w] -> y [planes, out_h, out_w]; backward accumulates dx. */
CX_OP(avgpool2d_forward, (cx_backend *be, const cx_pool_shape *s, const float *x, float *y))
CX_OP(avgpool2d_backward, (cx_backend *be, const cx_pool_shape *s, const float *dy, float *dx))
CX_OP(adaptive_avgpool2d_forward, (cx_backend *be, const cx_pool_shape *s, const float *x,
                                   float *y))
CX_OP(adaptive_avgpool2d_backward, (cx_backend *be, const cx_pool_shape *s, const float *dy,
                                    float *dx))
/* mean over hw: x [planes, hw] -> y [planes] */
CX_OP(global_avgpool_forward, (cx_backend *be, int planes, int hw, const float *x, float *y))
CX_OP(global_avgpool_backward, (cx_backend *be, int planes, int hw, const float *dy, float *dx))
CX_OP(resize_bilinear_forward, (cx_backend *be, const cx_pool_shape *s, const float *x,
                                float *y))
CX_OP(resize_bilinear_backward, (cx_backend *be, const cx_pool_shape *s, const float *dy,
                                 float *dx))

/* ---- attention ----
 * Cross-covariance attention core (EdgeNeXt's XCA between its qkv and proj linears):
 *   qkv [batch, tokens, 3*channels], channel index (part*heads + head)*head_dim + d
 *       with part 0 = q, 1 = k, 2 = v and head_dim = channels/heads
 *   temperature [heads]
 *   out [batch, tokens, channels], channel index head*head_dim + d
 * q and k are L2-normalised over the tokens (eps 1e-12), attn = softmax over the last
 * dim of (q k^T) * temperature[head] (head_dim x head_dim), out = attn v.
 * saved: cx_xca_saved_floats(batch, tokens, channels, heads). */
CX_OP(xca_forward, (cx_backend *be, int batch, int tokens, int channels, int heads,
                    const float *qkv, const float *temperature, float *out, float *saved))
CX_OP(xca_backward, (cx_backend *be, int batch, int tokens, int channels, int heads,
                     const float *qkv, const float *temperature, const float *saved,
                     const float *dout, float *dqkv, float *dtemperature))

/* Fourier positional encoding (EdgeNeXt's PositionalEncodingFourier before its 1x1
 * projection): out [2*hidden, h, w]: channels [0, hidden) from the row coordinate,
 * [hidden, 2*hidden) from the column; y = (1..h)/(h + 1e-6)*2pi; dim_t[i] =
 * temperature^(2*floor(i/2)/hidden); sin on even, cos on odd channels. A constant
 * of the shape: it has no backward. */
CX_OP(posenc_fourier, (cx_backend *be, int hidden, float temperature, int h, int w, float *out))

/* ---- losses ----
 * Structure loss of the COD decoder, per image:
 *   logits, target [batch, h*w] (one plane per image; target in {0, 1})
 *   weight = 1 + 5*|avgpool31(target) - target| (stride 1, pad 15, count_include_pad)
 *   p = sigmoid(logits); bce = softplus(logits) - target*logits (stable form)
 *   wbce = sum(weight*bce) / sum(weight)
 *   wiou = 1 - (sum(weight*p*target) + 1) / (sum(weight*(p + target)) - sum(weight*p*target) + 1)
 *   loss[b] = wbce + wiou
 * saved: cx_structure_loss_saved_floats(batch, h, w): the weight map [batch, h*w], then
 *   per image four sums [batch, 4]: sum(weight), sum(weight*bce), sum(weight*p*target),
 *   sum(weight*(p + target)) (the model reads them to report wbce and wiou).
 * Backward: dlogits (accumulate) from dloss [batch]. */
CX_OP(structure_loss_forward, (cx_backend *be, int batch, int h, int w, const float *logits,
                               const float *target, float *loss, float *saved))
CX_OP(structure_loss_backward, (cx_backend *be, int batch, int h, int w, const float *logits,
                                const float *target, const float *saved, const float *dloss,
                                float *dlogits))
