/* EdgeNeXt's attention pieces on the CPU: the cross-covariance attention (XCA) core and
 * the Fourier positional encoding.
 *
 * XCA, per (batch b, head h), with d = head_dim, N = tokens and rows of qkv [B, N, 3C]:
 *   q[i, n] = qkv[b, n, h*d + i], k[j, n] = qkv[b, n, C + h*d + j], v[j, n] = qkv[b, n, 2C + h*d + j]
 *   mq[i] = max(||q[i, :]||, eps), mk[j] likewise, eps = 1e-12
 *   S[i, j] = sum_n q[i, n] k[j, n] / (mq[i] mk[j])      (cosine similarities, d x d)
 *   A = softmax_rows(S * t[h])
 *   out[b, n, h*d + i] = sum_j A[i, j] v[j, n]
 * saved per (b, h): ||q[i, :]|| [d], ||k[j, :]|| [d], A [d, d] (cx_xca_saved_floats).
 *
 * Backward, with G[i, n] = dout[b, n, h*d + i]:
 *   dA[i, j] = sum_n G[i, n] v[j, n]                       dv[j, n] = sum_i A[i, j] G[i, n]
 *   dL[i, j] = A[i, j] (dA[i, j] - sum_j' A[i, j'] dA[i, j'])   (softmax)
 *   dt[h]   += sum_ij dL[i, j] S[i, j]                     dS = t[h] dL
 * The normalisation y = x / m (m = ||x|| >= eps) has the Jacobian (I - y y^T) / m, so with
 * P[i, j] = dS[i, j] / (mq[i] mk[j]) and c_q[i] = sum_j dS[i, j] S[i, j] (= <q^_i, dq^_i>):
 *   dq[i, n] = sum_j P[i, j] k[j, n] - c_q[i] / mq[i]^2 q[i, n]
 *   dk[j, n] = sum_i P[i, j] q[i, n] - c_k[j] / mk[j]^2 k[j, n],  c_k[j] = sum_i dS[i, j] S[i, j]
 * On the eps branch (||x|| < eps, m is the constant eps) the radial term is dropped.
 *
 * The token-long sums (q k^T, G v^T, the norms) walk the tokens in order, four per step,
 * with double accumulators, reading the contiguous d-float pieces of each token row (and
 * prefetching them: one head's pieces are 3C floats apart). S is recomputed in the
 * backward, in the same order and from the saved norms, so forward and backward see the
 * same S bit for bit. One task per (b, h); dt is reduced over the batch by the caller in a
 * fixed order.
 * Scratch: slot 0 per task, slot 3 on the caller (dt partials). A scratch allocation
 * failure is recorded for the backend's sync() (cpu_error.h). */
#include "cpu_ops.h"
#include "cpu_error.h"

#include <math.h>

#define XCA_EPS 1e-12
#define XCA_TOKEN_BLOCK 64 /* a multiple of 4 */
#define XCA_PREFETCH 8      /* tokens ahead: rows are 3C floats apart, too far for the
                             * hardware prefetcher, and each head reads only d of them */
#define TWO_PI 6.283185307179586476925286766559

typedef struct {
    int tokens, channels, heads, head_dim;
    const float *qkv;         /* [B, N, 3C] */
    const float *temperature; /* [heads] */
    float *out;               /* [B, N, C] */
    float *saved;             /* [B, heads, 2d + d*d] */
    const float *dout;        /* [B, N, C] */
    float *dqkv;              /* [B, N, 3C], accumulated, may be NULL */
    double *dt_parts;         /* [B * heads], or NULL */
} xca_ctx;

static inline double norm_floor(float norm) { return norm > XCA_EPS ? (double)norm : XCA_EPS; }

/* Asks for the d floats at p (one or two cache lines) ahead of use. */
static inline void prefetch_piece(const float *p, int d) {
    __builtin_prefetch(p);
    __builtin_prefetch(p + d - 1);
}

/* acc[i, j] += sum_n a[n, i] b[n, j] over n_tokens rows of a (row stride a_stride) and b
 * (row stride b_stride), in double; d x d. Four tokens per step share each load and
 * store of acc (fixed order, so the result does not depend on anything but the data).
 * b_buf: 4*d doubles of scratch. */
static void accumulate_outer(int n_tokens, int d, const float *a, size_t a_stride,
                             const float *b, size_t b_stride, double *restrict acc,
                             double *restrict b_buf) {
    int n = 0;
    for (; n + 4 <= n_tokens; n += 4) {
        const float *a0 = a + (size_t)n * a_stride, *a1 = a0 + a_stride, *a2 = a1 + a_stride,
                    *a3 = a2 + a_stride;
        const float *b0 = b + (size_t)n * b_stride, *b1 = b0 + b_stride, *b2 = b1 + b_stride,
                    *b3 = b2 + b_stride;
        double *restrict c0 = b_buf, *restrict c1 = c0 + d, *restrict c2 = c1 + d,
                         *restrict c3 = c2 + d;
        for (int ahead = 0; ahead < 4; ahead++) {
            prefetch_piece(a0 + (XCA_PREFETCH + ahead) * a_stride, d);
            prefetch_piece(b0 + (XCA_PREFETCH + ahead) * b_stride, d);
        }
        for (int j = 0; j < d; j++) {
            c0[j] = b0[j];
            c1[j] = b1[j];
            c2[j] = b2[j];
            c3[j] = b3[j];
        }
        for (int i = 0; i < d; i++) {
            double x0 = a0[i], x1 = a1[i], x2 = a2[i], x3 = a3[i];
            double *restrict acc_i = acc + (size_t)i * d;
            for (int j = 0; j < d; j++)
                acc_i[j] += (x0 * c0[j] + x1 * c1[j]) + (x2 * c2[j] + x3 * c3[j]);
        }
    }
    for (; n < n_tokens; n++) {
        const float *a0 = a + (size_t)n * a_stride, *b0 = b + (size_t)n * b_stride;
        for (int j = 0; j < d; j++)
            b_buf[j] = b0[j];
        for (int i = 0; i < d; i++) {
            double x0 = a0[i];
            double *restrict acc_i = acc + (size_t)i * d;
            for (int j = 0; j < d; j++)
                acc_i[j] += x0 * b_buf[j];
        }
    }
}

/* acc[i] += sum_j m[j, i] x[j]: m stored with index j major ([d, d]); four columns per
 * step share each load and store of acc. */
static void matvec_accumulate(int d, const float *restrict m, const float *restrict x,
                              float *restrict acc) {
    int j = 0;
    for (; j + 4 <= d; j += 4) {
        float x0 = x[j], x1 = x[j + 1], x2 = x[j + 2], x3 = x[j + 3];
        const float *m0 = m + (size_t)j * d, *m1 = m0 + d, *m2 = m1 + d, *m3 = m2 + d;
        for (int i = 0; i < d; i++)
            acc[i] += (m0[i] * x0 + m1[i] * x1) + (m2[i] * x2 + m3[i] * x3);
    }
    for (; j < d; j++) {
        float x0 = x[j];
        const float *m0 = m + (size_t)j * d;
        for (int i = 0; i < d; i++)
            acc[i] += m0[i] * x0;
    }
}

static void xca_forward_task(void *arg, int64_t begin, int64_t end) {
    const xca_ctx *c = arg;
    const int N = c->tokens, C = c->channels, heads = c->heads, d = c->head_dim;
    const size_t C3 = 3 * (size_t)C;
    size_t n_double = (size_t)d * d + 6 * (size_t)d;
    double *dot = (double *)cx_scratch(0, 2 * n_double + (size_t)d * d + d);
    if (!dot) {
        cx_cpu_record_error(CX_ENOMEM, "xca forward: out of scratch memory");
        return;
    }
    for (int64_t item = begin; item < end; item++) {
        double *q_sq = dot + (size_t)d * d, *k_sq = q_sq + d, *k_rows = k_sq + d; /* [4, d] */
        float *attn_t = (float *)(k_rows + 4 * (size_t)d); /* A transposed [d, d] */
        float *acc = attn_t + (size_t)d * d;   /* [d] */
        int64_t b = item / heads;
        int h = (int)(item % heads);
        const float *rows = c->qkv + (size_t)b * N * C3 + (size_t)h * d;

        for (size_t i = 0; i < (size_t)d * d; i++)
            dot[i] = 0.0;
        for (int i = 0; i < d; i++)
            q_sq[i] = k_sq[i] = 0.0;
        /* blocks of tokens, so the outer product finds the rows the norms just read in cache */
        for (int n0 = 0; n0 < N; n0 += XCA_TOKEN_BLOCK) {
            int n1 = n0 + XCA_TOKEN_BLOCK < N ? n0 + XCA_TOKEN_BLOCK : N;
            for (int n = n0; n < n1; n++) {
                const float *q = rows + (size_t)n * C3, *k = q + C;
                prefetch_piece(q + XCA_PREFETCH * C3, d);
                prefetch_piece(k + XCA_PREFETCH * C3, d);
                for (int i = 0; i < d; i++) {
                    q_sq[i] += (double)q[i] * q[i];
                    k_sq[i] += (double)k[i] * k[i];
                }
            }
            accumulate_outer(n1 - n0, d, rows + (size_t)n0 * C3, C3, rows + (size_t)n0 * C3 + C,
                             C3, dot, k_rows);
        }

        float *q_norm = c->saved + (size_t)item * (2 * (size_t)d + (size_t)d * d);
        float *k_norm = q_norm + d, *attn = k_norm + d;
        for (int i = 0; i < d; i++) {
            q_norm[i] = (float)sqrt(q_sq[i]);
            k_norm[i] = (float)sqrt(k_sq[i]);
        }
        double t = c->temperature[h];
        for (int i = 0; i < d; i++) {
            double mq = norm_floor(q_norm[i]);
            double *logits = dot + (size_t)i * d; /* overwritten in place */
            double top = -INFINITY;
            for (int j = 0; j < d; j++) {
                logits[j] = logits[j] / (mq * norm_floor(k_norm[j])) * t;
                if (logits[j] > top)
                    top = logits[j];
            }
            double sum = 0.0;
            for (int j = 0; j < d; j++) {
                logits[j] = exp(logits[j] - top);
                sum += logits[j];
            }
            for (int j = 0; j < d; j++) {
                float a = (float)(logits[j] / sum);
                attn[(size_t)i * d + j] = a;
                attn_t[(size_t)j * d + i] = a;
            }
        }

        for (int n = 0; n < N; n++) {
            const float *v = rows + (size_t)n * C3 + 2 * (size_t)C;
            float *o = c->out + ((size_t)b * N + n) * C + (size_t)h * d;
            prefetch_piece(v + XCA_PREFETCH * C3, d);
            prefetch_piece(o + XCA_PREFETCH * C, d);
            for (int i = 0; i < d; i++)
                acc[i] = 0.0f;
            matvec_accumulate(d, attn_t, v, acc);
            for (int i = 0; i < d; i++)
                o[i] = acc[i];
        }
    }
}

static void xca_backward_task(void *arg, int64_t begin, int64_t end) {
    const xca_ctx *c = arg;
    const int N = c->tokens, C = c->channels, heads = c->heads, d = c->head_dim;
    const size_t C3 = 3 * (size_t)C, dd = (size_t)d * d;
    size_t n_double = 2 * dd + 6 * (size_t)d;
    size_t n_float = 3 * dd + 5 * (size_t)d;
    double *dot = (double *)cx_scratch(0, 2 * n_double + n_float);
    if (!dot) {
        cx_cpu_record_error(CX_ENOMEM, "xca backward: out of scratch memory");
        return;
    }
    for (int64_t item = begin; item < end; item++) {
        int64_t b = item / heads;
        int h = (int)(item % heads);
        double *d_attn = dot + dd;            /* dA [d, d] */
        double *row_buf = d_attn + dd;        /* [4, d] */
        double *c_q = row_buf + 4 * (size_t)d, *c_k = c_q + d;
        float *attn = (float *)(c_k + d);     /* A [d, d] */
        float *p = attn + dd, *p_t = p + dd;  /* P and P^T [d, d] */
        float *coef_q = p_t + dd, *coef_k = coef_q + d;
        float *acc_q = coef_k + d, *acc_k = acc_q + d, *acc_v = acc_k + d;
        const float *rows = c->qkv + (size_t)b * N * C3 + (size_t)h * d;
        const float *grad_rows = c->dout + (size_t)b * N * C + (size_t)h * d;
        const float *q_norm = c->saved + (size_t)item * (2 * (size_t)d + dd);
        const float *k_norm = q_norm + d, *saved_attn = k_norm + d;

        /* pass 1 over the tokens: q k^T and G v^T */
        for (size_t i = 0; i < 2 * dd; i++)
            dot[i] = 0.0;
        accumulate_outer(N, d, rows, C3, rows + C, C3, dot, row_buf);
        accumulate_outer(N, d, grad_rows, C, rows + 2 * (size_t)C, C3, d_attn, row_buf);

        /* softmax, temperature and normalisation backward on the d x d matrices */
        double t = c->temperature[h], dt = 0.0;
        for (int j = 0; j < d; j++)
            c_k[j] = 0.0;
        for (int i = 0; i < d; i++) {
            double mq = norm_floor(q_norm[i]);
            const float *a_i = saved_attn + (size_t)i * d;
            const double *dot_i = dot + (size_t)i * d, *d_attn_i = d_attn + (size_t)i * d;
            double row_dot = 0.0;
            for (int j = 0; j < d; j++)
                row_dot += (double)a_i[j] * d_attn_i[j];
            c_q[i] = 0.0;
            for (int j = 0; j < d; j++) {
                double denom = mq * norm_floor(k_norm[j]);
                double s = dot_i[j] / denom;
                double d_logit = a_i[j] * (d_attn_i[j] - row_dot);
                double d_s = d_logit * t;
                dt += d_logit * s;
                c_q[i] += d_s * s;
                c_k[j] += d_s * s;
                float pij = (float)(d_s / denom);
                p[(size_t)i * d + j] = pij;
                p_t[(size_t)j * d + i] = pij;
                attn[(size_t)i * d + j] = a_i[j];
            }
        }
        if (c->dt_parts)
            c->dt_parts[item] = dt;
        if (!c->dqkv)
            continue;
        for (int i = 0; i < d; i++) {
            double mq = norm_floor(q_norm[i]), mk = norm_floor(k_norm[i]);
            coef_q[i] = q_norm[i] >= XCA_EPS ? (float)(c_q[i] / (mq * mq)) : 0.0f;
            coef_k[i] = k_norm[i] >= XCA_EPS ? (float)(c_k[i] / (mk * mk)) : 0.0f;
        }

        /* pass 2 over the tokens: dq, dk, dv */
        for (int n = 0; n < N; n++) {
            const float *q = rows + (size_t)n * C3, *k = q + C;
            const float *g = grad_rows + (size_t)n * C;
            float *dq = c->dqkv + ((size_t)b * N + n) * C3 + (size_t)h * d;
            float *dk = dq + C, *dv = dk + C;
            for (int part = 0; part < 3; part++) {
                prefetch_piece(q + XCA_PREFETCH * C3 + part * C, d);
                prefetch_piece(dq + XCA_PREFETCH * C3 + part * C, d);
            }
            prefetch_piece(g + XCA_PREFETCH * C, d);
            for (int i = 0; i < d; i++) {
                acc_q[i] = -coef_q[i] * q[i];
                acc_k[i] = -coef_k[i] * k[i];
                acc_v[i] = 0.0f;
            }
            matvec_accumulate(d, p_t, k, acc_q);
            matvec_accumulate(d, p, q, acc_k);
            matvec_accumulate(d, attn, g, acc_v);
            for (int i = 0; i < d; i++) {
                dq[i] += acc_q[i];
                dk[i] += acc_k[i];
                dv[i] += acc_v[i];
            }
        }
    }
}

void cpu_xca_forward(cx_backend *be, int batch, int tokens, int channels, int heads,
                     const float *qkv, const float *temperature, float *out, float *saved) {
    (void)be;
    xca_ctx c = {tokens, channels, heads, channels / heads, qkv, temperature, out, saved,
                 NULL, NULL, NULL};
    cx_parallel_for((int64_t)batch * heads, 1, xca_forward_task, &c);
}

void cpu_xca_backward(cx_backend *be, int batch, int tokens, int channels, int heads,
                      const float *qkv, const float *temperature, const float *saved,
                      const float *dout, float *dqkv, float *dtemperature) {
    (void)be;
    if (!dqkv && !dtemperature)
        return;
    double *dt_parts = NULL;
    if (dtemperature) {
        dt_parts = (double *)cx_scratch(3, 2 * (size_t)batch * heads);
        if (!dt_parts) {
            cx_cpu_record_error(CX_ENOMEM, "xca backward: out of scratch memory for the "
                                           "temperature gradient");
            return;
        }
    }
    xca_ctx c = {tokens, channels, heads, channels / heads, qkv, temperature, NULL,
                 (float *)saved, dout, dqkv, dt_parts};
    cx_parallel_for((int64_t)batch * heads, 1, xca_backward_task, &c);
    if (dt_parts) {
        for (int h = 0; h < heads; h++) {
            double sum = 0.0;
            for (int b = 0; b < batch; b++)
                sum += dt_parts[(size_t)b * heads + h];
            dtemperature[h] += (float)sum;
        }
    }
}

/* ---- Fourier positional encoding ---------------------------------------------------
 * out [2*hidden, h, w]; channel c < hidden varies with the row, c >= hidden with the
 * column: coord = (index + 1) / (size + 1e-6) * 2pi, value = coord / temperature^(2
 * floor(i/2) / hidden) with i = c mod hidden, sin on even i, cos on odd i. Computed in
 * double, rounded once to float. */
void cpu_posenc_fourier(cx_backend *be, int hidden, float temperature, int h, int w,
                        float *out) {
    (void)be;
    for (int c = 0; c < 2 * hidden; c++) {
        int i = c % hidden;
        int along_rows = c < hidden;
        double dim_t = pow((double)temperature, (double)(2 * (i / 2)) / hidden);
        float *plane = out + (size_t)c * h * w;
        if (along_rows) {
            for (int r = 0; r < h; r++) {
                double value = (r + 1) / (h + 1e-6) * TWO_PI / dim_t;
                float f = (float)(i % 2 == 0 ? sin(value) : cos(value));
                for (int col = 0; col < w; col++)
                    plane[(size_t)r * w + col] = f;
            }
        } else {
            for (int col = 0; col < w; col++) {
                double value = (col + 1) / (w + 1e-6) * TWO_PI / dim_t;
                plane[col] = (float)(i % 2 == 0 ? sin(value) : cos(value));
            }
            for (int r = 1; r < h; r++)
                for (int col = 0; col < w; col++)
                    plane[(size_t)r * w + col] = plane[col];
        }
    }
}
