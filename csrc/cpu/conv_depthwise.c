/* Channel-wise convolution: groups == in_ch and out_ch = mult * in_ch (mult 1 is
 * depthwise; EdgeNeXt's k = 3..9 and the decoder's dilated 3x3; mult 3 is the edge
 * expert). Output channel o reads input channel o / mult with its own k_h x k_w filter
 * w[o, 0, :, :] (PyTorch's grouped order). Direct loops, no GEMM.
 *
 * Each task owns one plane: it copies its input plane into a zero-padded buffer (so the
 * inner loops have no bounds checks) and sweeps the outputs 8 at a time. With stride 1
 * an AVX2+FMA path runs when the CPU has it; other strides use plain loops.
 * Summation order per output element is fixed: bias, then taps in (kh, kw) order.
 * dw and dbias reduce over the batch through per-(image, channel) partials that are
 * added in image order, so nothing depends on the thread count. */
#if defined(__x86_64__) || defined(__i386__)
#define CX_CONV_X86 1
#include <immintrin.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "cpu_error.h"

#ifdef CX_CONV_X86
#define CX_AVX2 __attribute__((target("avx2,fma")))
#endif
#define CORR_SLACK 16 /* floats after a padded plane that vector loads may touch */

int cx_conv_is_channelwise(const cx_conv_shape *s);
void cx_conv_channelwise_forward(const cx_conv_shape *s, const float *x, const float *w,
                                 const float *bias, float *y);
void cx_conv_channelwise_backward(const cx_conv_shape *s, const float *x, const float *w,
                                  const float *dy, float *dx, float *dw, float *dbias);

int cx_conv_is_channelwise(const cx_conv_shape *s) {
    return s->groups == s->in_ch && s->in_ch > 0 && s->out_ch % s->in_ch == 0;
}

static int have_avx2(void) {
    static int cached = -1;
    if (cached < 0) {
        cached = 0;
#ifdef CX_CONV_X86
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
        const char *env = getenv("CODEXT_GEMM_KERNEL"); /* "generic": portable loops */
        if (env && strcmp(env, "generic") == 0)
            cached = 0;
    }
    return cached;
}

/* dst [rows, cols] = zeros with src [h, w] placed at (top, left). */
static void pad_plane(const float *src, int h, int w, float *dst, int rows, int cols, int top,
                      int left) {
    memset(dst, 0, (size_t)rows * cols * sizeof(float));
    for (int r = 0; r < h; r++)
        memcpy(dst + (int64_t)(r + top) * cols + left, src + (int64_t)r * w,
               (size_t)w * sizeof(float));
}

/* ---- one output plane of a stride-1 correlation ----------------------------------------
 * out[r][c] (=|+=) init + sum_{i<kh, j<kw} filt[i*kw + j] * in[(r + i*step_h)*in_cols +
 *                                                        c + j*step_w]
 * for r < rows, c < cols, `in` being a padded plane (no bounds checks needed).
 * step may be negative (the transposed correlation of the input gradient). */
typedef struct {
    int rows, cols, in_cols, kh, kw, step_h, step_w;
} corr_geometry;

#ifdef CX_CONV_X86
/* R output rows x 8 columns per step: R independent FMA chains hide the FMA latency.
 * Columns past `cols` are computed from the buffer's slack and not stored. */
#define DEFINE_CORR_ROWS(R)                                                                  \
    CX_AVX2 static void corr_rows_##R(const corr_geometry *g, const float *in,              \
                                      const float *filt, float init, int accumulate,        \
                                      float *out) {                                         \
        for (int c = 0; c < g->cols; c += 8) {                                               \
            __m256 acc[R];                                                                   \
            _Pragma("GCC unroll 8") for (int rr = 0; rr < R; rr++) acc[rr] =                \
                _mm256_set1_ps(init);                                                        \
            for (int i = 0; i < g->kh; i++) {                                                \
                const float *src = in + (int64_t)i * g->step_h * g->in_cols + c;             \
                for (int j = 0; j < g->kw; j++) {                                            \
                    __m256 wv = _mm256_set1_ps(filt[i * g->kw + j]);                         \
                    const float *sj = src + j * g->step_w;                                   \
                    _Pragma("GCC unroll 8") for (int rr = 0; rr < R; rr++) acc[rr] =        \
                        _mm256_fmadd_ps(wv, _mm256_loadu_ps(sj + (int64_t)rr * g->in_cols), \
                                        acc[rr]);                                            \
                }                                                                            \
            }                                                                                \
            int n = g->cols - c < 8 ? g->cols - c : 8;                                       \
            __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n),                          \
                                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));    \
            _Pragma("GCC unroll 8") for (int rr = 0; rr < R; rr++) {                         \
                float *o = out + (int64_t)rr * g->cols + c;                                  \
                __m256 v = acc[rr];                                                          \
                if (accumulate)                                                              \
                    v = _mm256_add_ps(_mm256_maskload_ps(o, mask), v);                       \
                _mm256_maskstore_ps(o, mask, v);                                             \
            }                                                                                \
        }                                                                                    \
    }

DEFINE_CORR_ROWS(8)
DEFINE_CORR_ROWS(4)
DEFINE_CORR_ROWS(2)
DEFINE_CORR_ROWS(1)

/* Reads up to 7 floats past the last row used: callers leave CORR_SLACK floats. */
CX_AVX2 static void corr_plane_avx2(const corr_geometry *g, const float *in, const float *filt,
                                    float init, int accumulate, float *out) {
    int r = 0;
    for (; r + 8 <= g->rows; r += 8)
        corr_rows_8(g, in + (int64_t)r * g->in_cols, filt, init, accumulate,
                    out + (int64_t)r * g->cols);
    for (int block = 4; block >= 1; block /= 2)
        if (g->rows - r >= block) {
            const float *src = in + (int64_t)r * g->in_cols;
            float *dst = out + (int64_t)r * g->cols;
            if (block == 4)
                corr_rows_4(g, src, filt, init, accumulate, dst);
            else if (block == 2)
                corr_rows_2(g, src, filt, init, accumulate, dst);
            else
                corr_rows_1(g, src, filt, init, accumulate, dst);
            r += block;
        }
}

#endif

static void corr_plane_generic(const corr_geometry *g, const float *in, const float *filt,
                               float init, int accumulate, float *out) {
    for (int r = 0; r < g->rows; r++) {
        float *out_row = out + (int64_t)r * g->cols;
        for (int c = 0; c < g->cols; c++) {
            float acc = init;
            for (int i = 0; i < g->kh; i++) {
                const float *src = in + (int64_t)(r + i * g->step_h) * g->in_cols + c;
                for (int j = 0; j < g->kw; j++)
                    acc += filt[i * g->kw + j] * src[j * g->step_w];
            }
            out_row[c] = accumulate ? out_row[c] + acc : acc;
        }
    }
}

static void corr_plane(const corr_geometry *g, const float *in, const float *filt, float init,
                       int accumulate, float *out) {
#ifdef CX_CONV_X86
    if (have_avx2()) {
        corr_plane_avx2(g, in, filt, init, accumulate, out);
        return;
    }
#endif
    corr_plane_generic(g, in, filt, init, accumulate, out);
}

/* ---- forward ------------------------------------------------------------------------------ */

typedef struct {
    const cx_conv_shape *s;
    int out_h, out_w, mult;
    const float *x, *w, *bias, *dy;
    float *y, *dx, *partials;
    int failed;
} channelwise_ctx;

static void forward_task(void *vctx, int64_t begin, int64_t end) {
    channelwise_ctx *c = vctx;
    const cx_conv_shape *s = c->s;
    int rows = s->in_h + 2 * s->pad_h, cols = s->in_w + 2 * s->pad_w;
    float *padded = cx_scratch(1, (size_t)rows * cols + CORR_SLACK);
    if (!padded) {
        __atomic_store_n(&c->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    memset(padded + (size_t)rows * cols, 0, CORR_SLACK * sizeof(float));
    int kk = s->k_h * s->k_w;
    for (int64_t plane = begin; plane < end; plane++) {
        int b = (int)(plane / s->out_ch), o = (int)(plane % s->out_ch);
        const float *x_plane = c->x + ((int64_t)b * s->in_ch + o / c->mult) * s->in_h * s->in_w;
        const float *filt = c->w + (int64_t)o * kk;
        float *y_plane = c->y + plane * c->out_h * c->out_w;
        float init = c->bias ? c->bias[o] : 0.0f;
        pad_plane(x_plane, s->in_h, s->in_w, padded, rows, cols, s->pad_h, s->pad_w);
        if (s->stride == 1) {
            corr_geometry g = {c->out_h, c->out_w, cols, s->k_h, s->k_w, s->dilation, s->dilation};
            corr_plane(&g, padded, filt, init, 0, y_plane);
            continue;
        }
        for (int oh = 0; oh < c->out_h; oh++)
            for (int ow = 0; ow < c->out_w; ow++) {
                float acc = init;
                for (int i = 0; i < s->k_h; i++) {
                    const float *src = padded + (int64_t)(oh * s->stride + i * s->dilation) * cols +
                                       ow * s->stride;
                    for (int j = 0; j < s->k_w; j++)
                        acc += filt[i * s->k_w + j] * src[j * s->dilation];
                }
                y_plane[(int64_t)oh * c->out_w + ow] = acc;
            }
    }
}

void cx_conv_channelwise_forward(const cx_conv_shape *s, const float *x, const float *w,
                                 const float *bias, float *y) {
    channelwise_ctx c = {.s = s, .out_h = cx_conv_out_h(s), .out_w = cx_conv_out_w(s),
                         .mult = s->out_ch / s->in_ch};
    c.x = x;
    c.w = w;
    c.bias = bias;
    c.y = y;
    have_avx2(); /* detect before the tasks read it */
    cx_parallel_for((int64_t)s->batch * s->out_ch, 1, forward_task, &c);
    if (c.failed)
        cx_cpu_record_error(CX_ENOMEM, "conv2d (channel-wise): out of scratch memory");
}

/* ---- input gradient ------------------------------------------------------------------------
 * dx[ci][ih][iw] += sum_{j<mult} sum_{kh,kw} w[o][kh][kw] * dy[o][oh][ow], o = ci*mult + j,
 * with ih = oh*stride - pad_h + kh*dilation. For stride 1 that is a correlation of the
 * zero-padded dy with steps -dilation; each task owns an input plane. */
static void input_grad_task(void *vctx, int64_t begin, int64_t end) {
    channelwise_ctx *c = vctx;
    const cx_conv_shape *s = c->s;
    int d = s->dilation, kk = s->k_h * s->k_w;
    int64_t hw = (int64_t)s->in_h * s->in_w;
    /* dy plane padded so that row oh sits at oh + top and every tap stays inside */
    int top = (s->k_h - 1) * d - s->pad_h, left = (s->k_w - 1) * d - s->pad_w;
    top = top > 0 ? top : 0;
    left = left > 0 ? left : 0;
    int rows = top + (c->out_h > s->in_h + s->pad_h ? c->out_h : s->in_h + s->pad_h);
    int cols = left + (c->out_w > s->in_w + s->pad_w ? c->out_w : s->in_w + s->pad_w);
    float *padded = NULL, *acc_plane = NULL;
    if (s->stride == 1) {
        padded = cx_scratch(1, (size_t)rows * cols + CORR_SLACK + hw);
        if (!padded) {
            __atomic_store_n(&c->failed, 1, __ATOMIC_RELAXED);
            return;
        }
        memset(padded + (size_t)rows * cols, 0, CORR_SLACK * sizeof(float));
        acc_plane = padded + (size_t)rows * cols + CORR_SLACK;
    }
    for (int64_t plane = begin; plane < end; plane++) {
        int b = (int)(plane / s->in_ch), ci = (int)(plane % s->in_ch);
        float *dx_plane = c->dx + plane * hw;
        if (s->stride == 1) {
            /* dx += (sum over the mult outputs); with mult 1 straight into dx */
            float *target = c->mult == 1 ? dx_plane : acc_plane;
            for (int j = 0; j < c->mult; j++) {
                int o = ci * c->mult + j;
                const float *dy_plane = c->dy + ((int64_t)b * s->out_ch + o) * c->out_h * c->out_w;
                pad_plane(dy_plane, c->out_h, c->out_w, padded, rows, cols, top, left);
                corr_geometry g = {s->in_h, s->in_w, cols, s->k_h, s->k_w, -d, -d};
                const float *origin = padded + (int64_t)(s->pad_h + top) * cols + s->pad_w + left;
                corr_plane(&g, origin, c->w + (int64_t)o * kk, 0.0f, c->mult == 1 || j > 0,
                           target);
            }
            if (c->mult > 1)
                for (int64_t i = 0; i < hw; i++)
                    dx_plane[i] += acc_plane[i];
            continue;
        }
        for (int ih = 0; ih < s->in_h; ih++)
            for (int iw = 0; iw < s->in_w; iw++) {
                float acc = 0.0f;
                for (int j = 0; j < c->mult; j++) {
                    int o = ci * c->mult + j;
                    const float *dy_plane =
                        c->dy + ((int64_t)b * s->out_ch + o) * c->out_h * c->out_w;
                    const float *filt = c->w + (int64_t)o * kk;
                    for (int kh = 0; kh < s->k_h; kh++) {
                        int num_h = ih + s->pad_h - kh * d;
                        if (num_h < 0 || num_h % s->stride)
                            continue;
                        int oh = num_h / s->stride;
                        if (oh >= c->out_h)
                            continue;
                        for (int kw = 0; kw < s->k_w; kw++) {
                            int num_w = iw + s->pad_w - kw * d;
                            if (num_w < 0 || num_w % s->stride)
                                continue;
                            int ow = num_w / s->stride;
                            if (ow >= c->out_w)
                                continue;
                            acc += filt[kh * s->k_w + kw] * dy_plane[(int64_t)oh * c->out_w + ow];
                        }
                    }
                }
                dx_plane[(int64_t)ih * s->in_w + iw] += acc;
            }
    }
}

/* ---- weight and bias gradients: per-plane partials -------------------------------------------
 * partials[(b*out_ch + o)*(kk+1) + t] = sum_{oh,ow} dy[b,o,oh,ow] * x_padded[tap t];
 * entry kk holds sum dy (the bias). */
#define MAX_TAPS 256 /* taps accumulated in one sweep of the plane (16 x 16 filters) */

#ifdef CX_CONV_X86
/* part[t] = sum_{r,c} dy[r][c] * in[(r + kh*dil)*in_cols + c + kw*dil] for every tap
 * t = (kh, kw) at once (stride 1), and part[kk] = sum dy: one sweep of the plane, one
 * vector accumulator per tap (independent FMA chains). Lanes past `cols` load zeros. */
CX_AVX2 static void tap_dots_avx2(const float *dy, int rows, int cols, const float *in,
                                  int in_cols, int k_h, int k_w, int dil, float *part) {
    __m256 acc[MAX_TAPS + 1];
    int kk = k_h * k_w;
    for (int t = 0; t <= kk; t++)
        acc[t] = _mm256_setzero_ps();
    for (int c = 0; c < cols; c += 8) {
        int n = cols - c < 8 ? cols - c : 8;
        __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int r = 0; r < rows; r++) {
            __m256 dyv = _mm256_maskload_ps(dy + (int64_t)r * cols + c, mask);
            acc[kk] = _mm256_add_ps(acc[kk], dyv);
            const float *base = in + (int64_t)r * in_cols + c;
            int t = 0;
            for (int i = 0; i < k_h; i++) {
                const float *row = base + (int64_t)i * dil * in_cols;
                if (n == 8)
                    for (int j = 0; j < k_w; j++, t++)
                        acc[t] = _mm256_fmadd_ps(dyv, _mm256_loadu_ps(row + j * dil), acc[t]);
                else
                    for (int j = 0; j < k_w; j++, t++)
                        acc[t] = _mm256_fmadd_ps(dyv, _mm256_maskload_ps(row + j * dil, mask),
                                                 acc[t]);
            }
        }
    }
    for (int t = 0; t <= kk; t++) {
        float lanes[8];
        _mm256_storeu_ps(lanes, acc[t]);
        part[t] = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
                  ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    }
}
#endif

static float dot_shifted_generic(const float *dy, int rows, int cols, const float *in,
                                 int in_cols, int step) {
    float acc = 0.0f;
    for (int r = 0; r < rows; r++) {
        const float *a = dy + (int64_t)r * cols, *b = in + (int64_t)r * step * in_cols;
        for (int c = 0; c < cols; c++)
            acc += a[c] * b[(int64_t)c * step];
    }
    return acc;
}

static void weight_grad_task(void *vctx, int64_t begin, int64_t end) {
    channelwise_ctx *c = vctx;
    const cx_conv_shape *s = c->s;
    int kk = s->k_h * s->k_w;
    int rows = s->in_h + 2 * s->pad_h, cols = s->in_w + 2 * s->pad_w;
    float *padded = cx_scratch(1, (size_t)rows * cols + CORR_SLACK);
    if (!padded) {
        __atomic_store_n(&c->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    memset(padded + (size_t)rows * cols, 0, CORR_SLACK * sizeof(float));
    int64_t out_hw = (int64_t)c->out_h * c->out_w;
    for (int64_t plane = begin; plane < end; plane++) {
        int b = (int)(plane / s->out_ch), o = (int)(plane % s->out_ch);
        const float *dy_plane = c->dy + plane * out_hw;
        float *part = c->partials + plane * (kk + 1);
        const float *x_plane = c->x + ((int64_t)b * s->in_ch + o / c->mult) * s->in_h * s->in_w;
        pad_plane(x_plane, s->in_h, s->in_w, padded, rows, cols, s->pad_h, s->pad_w);
#ifdef CX_CONV_X86
        if (s->stride == 1 && kk <= MAX_TAPS && have_avx2()) {
            tap_dots_avx2(dy_plane, c->out_h, c->out_w, padded, cols, s->k_h, s->k_w,
                          s->dilation, part);
            continue;
        }
#endif
        for (int kh = 0; kh < s->k_h; kh++)
            for (int kw = 0; kw < s->k_w; kw++) {
                const float *origin =
                    padded + (int64_t)kh * s->dilation * cols + kw * s->dilation;
                part[kh * s->k_w + kw] = dot_shifted_generic(dy_plane, c->out_h, c->out_w,
                                                             origin, cols, s->stride);
            }
        float bias_sum = 0.0f;
        for (int64_t i = 0; i < out_hw; i++)
            bias_sum += dy_plane[i];
        part[kk] = bias_sum;
    }
}

void cx_conv_channelwise_backward(const cx_conv_shape *s, const float *x, const float *w,
                                  const float *dy, float *dx, float *dw, float *dbias) {
    channelwise_ctx c = {.s = s, .out_h = cx_conv_out_h(s), .out_w = cx_conv_out_w(s),
                         .mult = s->out_ch / s->in_ch};
    c.x = x;
    c.w = w;
    c.dy = dy;
    c.dx = dx;
    int kk = s->k_h * s->k_w;
    have_avx2(); /* detect before the tasks read it */
    if (dx)
        cx_parallel_for((int64_t)s->batch * s->in_ch, 1, input_grad_task, &c);
    if (dw || dbias) {
        c.partials = cx_scratch(0, (size_t)s->batch * s->out_ch * (kk + 1));
        if (!c.partials) {
            cx_cpu_record_error(CX_ENOMEM, "conv2d backward (channel-wise): out of scratch memory");
            return;
        }
        cx_parallel_for((int64_t)s->batch * s->out_ch, 1, weight_grad_task, &c);
        for (int o = 0; o < s->out_ch; o++)
            for (int t = 0; t <= kk; t++) {
                float total = 0.0f;
                for (int b = 0; b < s->batch; b++)
                    total += c.partials[((int64_t)b * s->out_ch + o) * (kk + 1) + t];
                if (t < kk && dw)
                    dw[(int64_t)o * kk + t] += total;
                else if (t == kk && dbias)
                    dbias[o] += total;
            }
    }
    if (c.failed)
        cx_cpu_record_error(CX_ENOMEM, "conv2d backward (channel-wise): out of scratch memory");
}
