/* Cross-covariance attention (XCA) core on the GPU, host side; shapes in ops/op_list.h,
 * the math (and its backward, temperature gradient included) in csrc/cpu/attention.c,
 * which this follows step for step. The kernels are in device/attention.cuh.
 *
 * Per (batch b, head h), d = channels / heads, q/k/v the head's d channels of qkv's
 * three parts, items = batch * heads:
 * forward
 *   1. xca_gram_kernel: q k^T and the squared norms of q and k, as float partial sums
 *      over chunks of XCA_TOKEN_CHUNK tokens (scratch slot 0);
 *   2. xca_combine_kernel: the chunk partials added in chunk order, in double (slot 1);
 *   3. xca_softmax_kernel: norms (float, saved), S = dot / (max(|q|, eps) max(|k|, eps)),
 *      A = softmax(S t) in double, rounded to float (saved);
 *   4. xca_tokens_kernel: out = A v.
 * backward
 *   1-2 again for q k^T (the same kernels on the same data: the same dot, bit for bit,
 *      as the CPU recomputes it) and for dA = dout v^T;
 *   3. xca_attn_backward_kernel: the softmax, temperature and normalisation backward on
 *      the d x d matrices: P, the radial coefficients c / m^2 and the per-item dt (slot 2);
 *   4. xca_temperature_kernel: dtemperature[h] += sum over the batch, in order;
 *   5. xca_tokens_kernel three times, accumulating into dqkv:
 *      dq = k P^T - coef_q q, dk = q P - coef_k k, dv = dout A.
 * Token-long sums are float FMA chains per chunk, added in double across chunks (the CPU
 * sums in double throughout); the d x d work is in double as on the CPU. No atomics. */
#include "common.cuh"
#include "device/attention.cuh"

#define XCA_GRID_LIMIT 65535 /* grid y and z */

typedef struct {
    int d, items, chunks, tiles;
    size_t stride; /* d*d + 2d: one item's partials, sums and saved floats */
} xca_dims;

/* 0 with the error recorded when the problem does not fit the grids. */
static int xca_plan(cu_state *st, int batch, int tokens, int channels, int heads,
                    const char *what, xca_dims *g) {
    if ((long long)batch * heads > XCA_GRID_LIMIT) {
        cu_record(st, CX_EINVAL, "%s: batch*heads %lld exceeds %d", what,
                  (long long)batch * heads, XCA_GRID_LIMIT);
        return 0;
    }
    g->d = channels / heads;
    g->items = batch * heads;
    g->chunks = tokens > 0 ? (int)cu_ceil_div((size_t)tokens, XCA_TOKEN_CHUNK) : 1;
    g->tiles = (int)cu_ceil_div((size_t)g->d, XCA_TILE);
    g->stride = (size_t)g->d * g->d + 2 * (size_t)g->d;
    if (g->chunks > XCA_GRID_LIMIT) {
        cu_record(st, CX_EINVAL, "%s: %d tokens make %d chunks, more than %d", what, tokens,
                  g->chunks, XCA_GRID_LIMIT);
        return 0;
    }
    return 1;
}

/* Gram of two token-major operands into sums[item, 0 .. width) (double, stride
 * g->stride), with the squared norms when `norms` (width then includes them). */
static int xca_gram(cu_state *st, const xca_dims *g, int tokens, int heads, const float *a,
                    int a_stride, const float *b, int b_stride, int norms, float *partial,
                    double *sums, const char *what) {
    dim3 grid((unsigned)(g->tiles * g->tiles), (unsigned)g->chunks, (unsigned)g->items);
    CX_LAUNCH(xca_gram_kernel, grid, XCA_THREADS, 0, st->stream)(
        tokens, heads, g->d, a, a_stride, b, b_stride, norms, partial);
    if (!cu_ok_launch(st, what))
        return 0;
    int width = (int)(norms ? g->stride : (size_t)g->d * g->d);
    size_t n = (size_t)g->items * width;
    CX_LAUNCH(xca_combine_kernel, cu_blocks(n, XCA_THREADS), XCA_THREADS, 0, st->stream)(
        g->items, g->chunks, width, (int)g->stride, partial, sums);
    return cu_ok_launch(st, what);
}

/* out[b, n, h*d + o] (+)= -coef q-like term + sum_r x[n, r] M(o, r); see xca_tokens_kernel. */
static int xca_tokens(cu_state *st, const xca_dims *g, int tokens, int heads, const float *x,
                      int x_stride, const float *m, size_t m_item, int m_o, int m_r,
                      const float *coef, const float *y, int y_stride, float *out,
                      int out_stride, int accumulate, const char *what) {
    dim3 grid((unsigned)cu_ceil_div((size_t)tokens, XCA_TOKENS_PER_BLOCK), (unsigned)g->tiles,
              (unsigned)g->items);
    CX_LAUNCH(xca_tokens_kernel, grid, XCA_THREADS, 0, st->stream)(
        tokens, heads, g->d, x, x_stride, m, (int)m_item, m_o, m_r, coef, y, y_stride, out,
        out_stride, accumulate);
    return cu_ok_launch(st, what);
}

void cu_xca_forward(cx_backend *be, int batch, int tokens, int channels, int heads,
                    const float *qkv, const float *temperature, float *out, float *saved) {
    cu_state *st = cu_get(be);
    xca_dims g;
    if (batch <= 0 || heads <= 0 || channels / heads <= 0)
        return;
    if (!xca_plan(st, batch, tokens, channels, heads, "xca_forward", &g))
        return;
    const int C3 = 3 * channels;
    float *partial = cu_scratch(st, 0, (size_t)g.items * g.chunks * g.stride);
    double *sums = (double *)cu_scratch(st, 1, 2 * (size_t)g.items * g.stride);
    if (!partial || !sums)
        return;
    if (!xca_gram(st, &g, tokens, heads, qkv, C3, qkv + channels, C3, 1, partial, sums,
                  "xca_forward (q k^T)"))
        return;
    dim3 rows((unsigned)cu_ceil_div((size_t)g.d, XCA_ROWS), (unsigned)g.items);
    CX_LAUNCH(xca_softmax_kernel, rows, XCA_THREADS, 0, st->stream)(heads, g.d, sums,
                                                                     temperature, saved);
    if (!cu_ok_launch(st, "xca_forward (softmax)") || tokens <= 0)
        return;
    /* out[n, i] = sum_j A[i, j] v[n, j]: M(o, r) = A[o][r] */
    xca_tokens(st, &g, tokens, heads, qkv + 2 * (size_t)channels, C3, saved + 2 * g.d, g.stride,
               g.d, 1, NULL, NULL, 0, out, channels, 0, "xca_forward (attn v)");
}

void cu_xca_backward(cx_backend *be, int batch, int tokens, int channels, int heads,
                     const float *qkv, const float *temperature, const float *saved,
                     const float *dout, float *dqkv, float *dtemperature) {
    cu_state *st = cu_get(be);
    xca_dims g;
    if ((!dqkv && !dtemperature) || batch <= 0 || heads <= 0 || channels / heads <= 0)
        return;
    if (!xca_plan(st, batch, tokens, channels, heads, "xca_backward", &g))
        return;
    const int C3 = 3 * channels;
    const size_t items = (size_t)g.items, dd = (size_t)g.d * g.d;
    float *partial = cu_scratch(st, 0, items * g.chunks * g.stride);
    double *sums = (double *)cu_scratch(st, 1, 4 * items * g.stride);
    /* slot 2: dt_part [items] doubles, then P [items, d*d] and coef [2, items, d] floats */
    float *work = cu_scratch(st, 2, 2 * items + items * dd + 2 * items * g.d);
    if (!partial || !sums || !work)
        return;
    double *dot = sums, *d_attn = sums + items * g.stride, *dt_part = (double *)work;
    float *p = work + 2 * items, *coef = p + items * dd;
    const float *q = qkv, *k = qkv + channels, *v = qkv + 2 * (size_t)channels;
    if (!xca_gram(st, &g, tokens, heads, q, C3, k, C3, 0, partial, dot, "xca_backward (q k^T)") ||
        !xca_gram(st, &g, tokens, heads, dout, channels, v, C3, 0, partial, d_attn,
                  "xca_backward (dout v^T)"))
        return;
    CX_LAUNCH(xca_attn_backward_kernel, (unsigned)g.items, XCA_THREADS, 0, st->stream)(
        heads, g.d, dot, d_attn, saved, temperature, p, coef, dtemperature ? dt_part : NULL);
    if (!cu_ok_launch(st, "xca_backward (softmax)"))
        return;
    if (dtemperature) {
        CX_LAUNCH(xca_temperature_kernel, (unsigned)cu_ceil_div((size_t)heads, XCA_THREADS),
                  XCA_THREADS, 0, st->stream)(batch, heads, dt_part, dtemperature);
        if (!cu_ok_launch(st, "xca_backward (temperature)"))
            return;
    }
    if (!dqkv || tokens <= 0)
        return;
    const float *attn = saved + 2 * g.d;
    /* dq[n, i] += sum_j P[i, j] k[n, j] - coef_q[i] q[n, i]: M(o, r) = P[o][r] */
    if (!xca_tokens(st, &g, tokens, heads, k, C3, p, dd, g.d, 1, coef, q, C3, dqkv, C3, 1,
                    "xca_backward (dq)"))
        return;
    /* dk[n, j] += sum_i P[i, j] q[n, i] - coef_k[j] k[n, j]: M(o, r) = P[r][o] */
    if (!xca_tokens(st, &g, tokens, heads, q, C3, p, dd, 1, g.d, coef + items * g.d, k, C3,
                    dqkv + channels, C3, 1, "xca_backward (dk)"))
        return;
    /* dv[n, j] += sum_i A[i, j] dout[n, i]: M(o, r) = A[r][o] */
    xca_tokens(st, &g, tokens, heads, dout, channels, attn, g.stride, 1, g.d, NULL, NULL, 0,
               dqkv + 2 * (size_t)channels, C3, 1, "xca_backward (dv)");
}
