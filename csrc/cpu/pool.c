/* Average pooling on the CPU: square-window avgpool2d (PyTorch's AvgPool2d with
 * ceil_mode false), adaptive average pooling (PyTorch's bins) and the global mean.
 *
 * Every op acts on `planes` = batch*channels independent planes [in_h, in_w]; one task
 * owns whole planes, so each output element has one writer and a fixed summation order
 * whatever the thread count.
 *
 * avgpool2d is separable: the window sum is a box filter over rows followed by one over
 * columns, and the divisor is a product of a row factor and a column factor (with or
 * without count_include_pad). Both box filters use double prefix sums, so the cost per
 * pixel does not grow with k (the structure loss pools with k = 31 on 352x352 maps) and
 * the sums keep float32 accuracy. The backward is the transposed box filter: the outputs
 * whose windows cover input i along one axis form a contiguous range, so it is again two
 * prefix-sum passes, a gather with one += per input pixel.
 *
 * Scratch: per-thread slot 0 (double buffers). Should it fail to allocate, the error is
 * recorded for the backend's sync() (cpu_error.h). */
#include "cpu_ops.h"
#include "cpu_error.h"

#include <math.h>

/* floor(a / b) for b > 0 and any sign of a */
static inline int floor_div(int a, int b) {
    int q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* Divisor factor of one axis for the window starting at `start` (may be negative). */
static inline int window_count(int start, int k, int in, int pad, int count_include_pad) {
    if (count_include_pad) {
        int end = start + k < in + pad ? start + k : in + pad;
        return end - start;
    }
    int lo = start > 0 ? start : 0;
    int hi = start + k < in ? start + k : in;
    return hi > lo ? hi - lo : 0;
}

/* ---- avgpool2d ------------------------------------------------------------------- */

typedef struct {
    const cx_pool_shape *s;
    const float *x;  /* forward input  [planes, in_h, in_w]  */
    float *y;        /* forward output [planes, out_h, out_w] */
    const float *dy; /* backward: [planes, out_h, out_w] */
    float *dx;       /* backward: [planes, in_h, in_w], accumulated */
} avgpool_ctx;

/* Four rows at a time: their prefix sums run as four independent chains (interleaved
 * as prefix[c*4 + lane]), so the adds overlap instead of waiting on each other. */
#define LANES 4

/* Window of output o along an axis, clipped to the input: [lo, hi) (when lo and hi are
 * not NULL), and 1/count. */
static void window_table(int n_out, int n_in, int k, int stride, int pad, int incl, int *lo,
                         int *hi, double *inv_count) {
    for (int o = 0; o < n_out; o++) {
        int start = o * stride - pad;
        int l = start > 0 ? start : 0;
        int h = start + k < n_in ? start + k : n_in;
        if (lo && hi) {
            lo[o] = l;
            hi[o] = h > l ? h : l;
        }
        int count = window_count(start, k, n_in, pad, incl);
        inv_count[o] = count > 0 ? 1.0 / count : 0.0;
    }
}

/* Forward, per plane:
 *   column_prefix[r+1][ow] = column_prefix[r][ow] + sum of row r over window ow
 *   y[oh][ow] = (column_prefix[hi][ow] - column_prefix[lo][ow]) / (count_h * count_w) */
static void avgpool_forward_task(void *arg, int64_t begin, int64_t end) {
    const avgpool_ctx *c = arg;
    const cx_pool_shape *s = c->s;
    const int in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, out_w = s->out_w;
    const int k = s->k, stride = s->stride, pad = s->pad, incl = s->count_include_pad;
    size_t n_double = LANES * (size_t)(in_w + 1) + (size_t)(in_h + 1) * out_w + (size_t)out_w;
    double *row_prefix = (double *)cx_scratch(0, 2 * n_double + 2 * (size_t)out_w);
    if (!row_prefix) {
        cx_cpu_record_error(CX_ENOMEM, "avgpool2d forward: out of scratch memory");
        return;
    }
    double *column_prefix = row_prefix + LANES * (size_t)(in_w + 1); /* [in_h + 1, out_w] */
    double *inv_w = column_prefix + (size_t)(in_h + 1) * out_w;      /* [out_w] */
    int *lo_w = (int *)(inv_w + out_w), *hi_w = lo_w + out_w;        /* [out_w] each */
    window_table(out_w, in_w, k, stride, pad, incl, lo_w, hi_w, inv_w);
    for (int64_t p = begin; p < end; p++) {
        const float *x = c->x + (size_t)p * in_h * in_w;
        float *y = c->y + (size_t)p * out_h * out_w;
        for (int ow = 0; ow < out_w; ow++)
            column_prefix[ow] = 0.0;
        for (int r0 = 0; r0 < in_h; r0 += LANES) {
            int n_rows = in_h - r0 < LANES ? in_h - r0 : LANES;
            const float *rows[LANES]; /* lanes past the last row repeat it, unused */
            for (int l = 0; l < LANES; l++)
                rows[l] = x + (size_t)(r0 + (l < n_rows ? l : n_rows - 1)) * in_w;
            for (int l = 0; l < LANES; l++)
                row_prefix[l] = 0.0;
            for (int col = 0; col < in_w; col++)
                for (int l = 0; l < LANES; l++)
                    row_prefix[(col + 1) * LANES + l] = row_prefix[col * LANES + l] + rows[l][col];
            for (int ow = 0; ow < out_w; ow++) {
                const double *top = row_prefix + (size_t)hi_w[ow] * LANES;
                const double *bottom = row_prefix + (size_t)lo_w[ow] * LANES;
                double sum = column_prefix[(size_t)r0 * out_w + ow];
                for (int l = 0; l < n_rows; l++) {
                    sum += top[l] - bottom[l];
                    column_prefix[(size_t)(r0 + l + 1) * out_w + ow] = sum;
                }
            }
        }
        for (int oh = 0; oh < out_h; oh++) {
            int start_h = oh * stride - pad;
            int lo = start_h > 0 ? start_h : 0;
            int hi = start_h + k < in_h ? start_h + k : in_h;
            if (hi < lo)
                hi = lo;
            int count_h = window_count(start_h, k, in_h, pad, incl);
            double inv_count_h = count_h > 0 ? 1.0 / count_h : 0.0;
            const double *top = column_prefix + (size_t)lo * out_w;
            const double *bottom = column_prefix + (size_t)hi * out_w;
            float *y_row = y + (size_t)oh * out_w;
            for (int ow = 0; ow < out_w; ow++)
                y_row[ow] = (float)((bottom[ow] - top[ow]) * (inv_count_h * inv_w[ow]));
        }
    }
}

/* Outputs o whose window [o*stride - pad, o*stride - pad + k) covers input i:
 * o in [first, last] (empty when first > last). */
static inline void covering_outputs(int i, int k, int stride, int pad, int n_out, int *first,
                                    int *last) {
    int lo = floor_div(i + pad - k, stride) + 1;
    int hi = floor_div(i + pad, stride);
    *first = lo > 0 ? lo : 0;
    *last = hi < n_out - 1 ? hi : n_out - 1;
}

/* Backward, per plane, with g = dy / (count_h * count_w):
 *   column_prefix[oh+1][j] = column_prefix[oh][j] + sum of g[oh][ow] over ow covering j
 *   dx[i][j] += column_prefix[last_h(i)+1][j] - column_prefix[first_h(i)][j] */
static void avgpool_backward_task(void *arg, int64_t begin, int64_t end) {
    const avgpool_ctx *c = arg;
    const cx_pool_shape *s = c->s;
    const int in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, out_w = s->out_w;
    const int k = s->k, stride = s->stride, pad = s->pad, incl = s->count_include_pad;
    size_t n_double = LANES * (size_t)(out_w + 1) + (size_t)(out_h + 1) * in_w +
                      (size_t)out_w + (size_t)out_h;
    double *row_prefix = (double *)cx_scratch(0, 2 * n_double + 2 * (size_t)in_w);
    if (!row_prefix) {
        cx_cpu_record_error(CX_ENOMEM, "avgpool2d backward: out of scratch memory");
        return;
    }
    double *column_prefix = row_prefix + LANES * (size_t)(out_w + 1); /* [out_h + 1, in_w] */
    double *inv_w = column_prefix + (size_t)(out_h + 1) * in_w;       /* [out_w] */
    double *inv_h = inv_w + out_w;                                    /* [out_h] */
    int *first_w = (int *)(inv_h + out_h), *end_w = first_w + in_w;   /* [in_w] each */
    window_table(out_w, in_w, k, stride, pad, incl, NULL, NULL, inv_w);
    for (int oh = 0; oh < out_h; oh++) {
        int count_h = window_count(oh * stride - pad, k, in_h, pad, incl);
        inv_h[oh] = count_h > 0 ? 1.0 / count_h : 0.0;
    }
    for (int j = 0; j < in_w; j++) {
        int first, last;
        covering_outputs(j, k, stride, pad, out_w, &first, &last);
        first_w[j] = first;
        end_w[j] = last + 1 > first ? last + 1 : first;
    }
    for (int64_t p = begin; p < end; p++) {
        const float *dy = c->dy + (size_t)p * out_h * out_w;
        float *dx = c->dx + (size_t)p * in_h * in_w;
        for (int j = 0; j < in_w; j++)
            column_prefix[j] = 0.0;
        for (int oh0 = 0; oh0 < out_h; oh0 += LANES) {
            int n_rows = out_h - oh0 < LANES ? out_h - oh0 : LANES;
            const float *rows[LANES];
            double row_scale[LANES];
            for (int l = 0; l < LANES; l++) {
                int oh = oh0 + (l < n_rows ? l : n_rows - 1);
                rows[l] = dy + (size_t)oh * out_w;
                row_scale[l] = inv_h[oh];
            }
            for (int l = 0; l < LANES; l++)
                row_prefix[l] = 0.0;
            for (int ow = 0; ow < out_w; ow++)
                for (int l = 0; l < LANES; l++)
                    row_prefix[(ow + 1) * LANES + l] =
                        row_prefix[ow * LANES + l] + rows[l][ow] * (row_scale[l] * inv_w[ow]);
            for (int j = 0; j < in_w; j++) {
                const double *top = row_prefix + (size_t)end_w[j] * LANES;
                const double *bottom = row_prefix + (size_t)first_w[j] * LANES;
                double sum = column_prefix[(size_t)oh0 * in_w + j];
                for (int l = 0; l < n_rows; l++) {
                    sum += top[l] - bottom[l];
                    column_prefix[(size_t)(oh0 + l + 1) * in_w + j] = sum;
                }
            }
        }
        for (int i = 0; i < in_h; i++) {
            int first, last;
            covering_outputs(i, k, stride, pad, out_h, &first, &last);
            if (last < first)
                continue;
            const double *top = column_prefix + (size_t)first * in_w;
            const double *bottom = column_prefix + (size_t)(last + 1) * in_w;
            float *dx_row = dx + (size_t)i * in_w;
            for (int j = 0; j < in_w; j++)
                dx_row[j] += (float)(bottom[j] - top[j]);
        }
    }
}

/* Planes per task: enough pixels to pay for a task. */
static int64_t plane_grain(int64_t pixels_per_plane) {
    int64_t grain = 16384 / (pixels_per_plane > 0 ? pixels_per_plane : 1);
    return grain > 0 ? grain : 1;
}

void cpu_avgpool2d_forward(cx_backend *be, const cx_pool_shape *s, const float *x, float *y) {
    (void)be;
    avgpool_ctx c = {s, x, y, NULL, NULL};
    cx_parallel_for(s->planes, plane_grain((int64_t)s->in_h * s->in_w), avgpool_forward_task, &c);
}

void cpu_avgpool2d_backward(cx_backend *be, const cx_pool_shape *s, const float *dy, float *dx) {
    (void)be;
    if (!dx)
        return;
    avgpool_ctx c = {s, NULL, NULL, dy, dx};
    cx_parallel_for(s->planes, plane_grain((int64_t)s->in_h * s->in_w), avgpool_backward_task,
                    &c);
}

/* ---- adaptive avgpool2d -----------------------------------------------------------
 * Bin o of an axis covers [floor(o*in/out), ceil((o+1)*in/out)). Neighbouring bins
 * overlap when out does not divide in, so the backward scatters (serially within a
 * plane, so the += order into each dx element is fixed). */

static inline int bin_start(int o, int in, int out) { return (int)(((int64_t)o * in) / out); }
static inline int bin_end(int o, int in, int out) {
    return (int)(((int64_t)(o + 1) * in + out - 1) / out);
}

static void adaptive_forward_task(void *arg, int64_t begin, int64_t end) {
    const avgpool_ctx *c = arg;
    const cx_pool_shape *s = c->s;
    const int in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, out_w = s->out_w;
    for (int64_t p = begin; p < end; p++) {
        const float *x = c->x + (size_t)p * in_h * in_w;
        float *y = c->y + (size_t)p * out_h * out_w;
        for (int oh = 0; oh < out_h; oh++) {
            int h0 = bin_start(oh, in_h, out_h), h1 = bin_end(oh, in_h, out_h);
            for (int ow = 0; ow < out_w; ow++) {
                int w0 = bin_start(ow, in_w, out_w), w1 = bin_end(ow, in_w, out_w);
                double sum = 0.0;
                for (int r = h0; r < h1; r++)
                    for (int col = w0; col < w1; col++)
                        sum += x[(size_t)r * in_w + col];
                y[(size_t)oh * out_w + ow] = (float)(sum / ((double)(h1 - h0) * (w1 - w0)));
            }
        }
    }
}

static void adaptive_backward_task(void *arg, int64_t begin, int64_t end) {
    const avgpool_ctx *c = arg;
    const cx_pool_shape *s = c->s;
    const int in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, out_w = s->out_w;
    for (int64_t p = begin; p < end; p++) {
        const float *dy = c->dy + (size_t)p * out_h * out_w;
        float *dx = c->dx + (size_t)p * in_h * in_w;
        for (int oh = 0; oh < out_h; oh++) {
            int h0 = bin_start(oh, in_h, out_h), h1 = bin_end(oh, in_h, out_h);
            for (int ow = 0; ow < out_w; ow++) {
                int w0 = bin_start(ow, in_w, out_w), w1 = bin_end(ow, in_w, out_w);
                float g = (float)(dy[(size_t)oh * out_w + ow] / ((double)(h1 - h0) * (w1 - w0)));
                for (int r = h0; r < h1; r++)
                    for (int col = w0; col < w1; col++)
                        dx[(size_t)r * in_w + col] += g;
            }
        }
    }
}

void cpu_adaptive_avgpool2d_forward(cx_backend *be, const cx_pool_shape *s, const float *x,
                                    float *y) {
    (void)be;
    avgpool_ctx c = {s, x, y, NULL, NULL};
    cx_parallel_for(s->planes, plane_grain((int64_t)s->in_h * s->in_w), adaptive_forward_task,
                    &c);
}

void cpu_adaptive_avgpool2d_backward(cx_backend *be, const cx_pool_shape *s, const float *dy,
                                     float *dx) {
    (void)be;
    if (!dx)
        return;
    avgpool_ctx c = {s, NULL, NULL, dy, dx};
    cx_parallel_for(s->planes, plane_grain((int64_t)s->in_h * s->in_w), adaptive_backward_task,
                    &c);
}

/* ---- global average pool: x [planes, hw] -> y [planes] ----------------------------- */

typedef struct {
    int hw;
    const float *x;
    float *y;
    const float *dy;
    float *dx;
} global_ctx;

static void global_forward_task(void *arg, int64_t begin, int64_t end) {
    const global_ctx *c = arg;
    for (int64_t p = begin; p < end; p++) {
        const float *x = c->x + (size_t)p * c->hw;
        double sum = 0.0;
        for (int i = 0; i < c->hw; i++)
            sum += x[i];
        c->y[p] = (float)(sum / c->hw);
    }
}

static void global_backward_task(void *arg, int64_t begin, int64_t end) {
    const global_ctx *c = arg;
    for (int64_t p = begin; p < end; p++) {
        float *dx = c->dx + (size_t)p * c->hw;
        float g = (float)((double)c->dy[p] / c->hw);
        for (int i = 0; i < c->hw; i++)
            dx[i] += g;
    }
}

void cpu_global_avgpool_forward(cx_backend *be, int planes, int hw, const float *x, float *y) {
    (void)be;
    global_ctx c = {hw, x, y, NULL, NULL};
    cx_parallel_for(planes, plane_grain(hw), global_forward_task, &c);
}

void cpu_global_avgpool_backward(cx_backend *be, int planes, int hw, const float *dy, float *dx) {
    (void)be;
    if (!dx)
        return;
    global_ctx c = {hw, NULL, NULL, dy, dx};
    cx_parallel_for(planes, plane_grain(hw), global_backward_task, &c);
}
