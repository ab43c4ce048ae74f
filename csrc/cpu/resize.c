/* Bilinear resizing on the CPU, PyTorch's interpolate(mode='bilinear',
 * align_corners=False) without antialiasing, for upsampling and downsampling alike.
 *
 * Per axis (in -> out), as PyTorch computes it in float:
 *   scale = (float)in / out
 *   src   = max(scale * (o + 0.5) - 0.5, 0)
 *   i0    = min(floor(src), in - 1), i1 = i0 + (i0 < in - 1)
 *   l1    = clamp(src - i0, 0, 1), l0 = 1 - l1
 * (in == out is the identity: i0 = i1 = o, l0 = 1, l1 = 0.) Then
 *   y[oh, ow] = l0h * (l0w x[i0h, i0w] + l1w x[i0h, i1w]) + l1h * (l0w x[i1h, i0w] + l1w x[i1h, i1w])
 *
 * The backward is organised by input row, one task per dx row (no shared writes, a
 * fixed order): i0 is non-decreasing in o, so the output rows that read input row i are
 * those with i0 in {i-1, i}: one contiguous range [first[i-1], first[i+1]), where
 * first[i] is the first output with i0 >= i. They are combined with their weights, then
 * spread along the width into a row buffer of the task's own.
 *
 * Tables (taps, first) are built once per call in the caller's scratch slot 1 and read
 * by every task; tasks use slot 0. A scratch allocation failure is recorded for the
 * backend's sync() (cpu_error.h). */
#include "cpu_ops.h"
#include "cpu_error.h"

#include <math.h>

typedef struct {
    int i0, i1;
    float l0, l1;
} lerp_tap;

/* taps [out]; first [in + 1] (or NULL): first[i] = the first output with i0 >= i */
static void build_axis(int in, int out, lerp_tap *taps, int *first) {
    float scale = (float)in / (float)out;
    for (int o = 0; o < out; o++) {
        lerp_tap t;
        if (in == out) {
            t.i0 = t.i1 = o;
            t.l0 = 1.0f;
            t.l1 = 0.0f;
        } else {
            float src = scale * ((float)o + 0.5f) - 0.5f;
            if (src < 0.0f)
                src = 0.0f;
            int i0 = (int)floorf(src);
            if (i0 > in - 1)
                i0 = in - 1;
            float l1 = src - (float)i0;
            l1 = l1 < 0.0f ? 0.0f : (l1 > 1.0f ? 1.0f : l1);
            t.i0 = i0;
            t.i1 = i0 + (i0 < in - 1 ? 1 : 0);
            t.l1 = l1;
            t.l0 = 1.0f - l1;
        }
        taps[o] = t;
    }
    if (!first)
        return;
    int o = 0;
    for (int i = 0; i <= in; i++) {
        while (o < out && taps[o].i0 < i)
            o++;
        first[i] = o;
    }
}

/* Weight with which output o (tap t) reads input i. */
static inline float tap_weight(const lerp_tap *t, int i) {
    return (t->i0 == i ? t->l0 : 0.0f) + (t->i1 == i ? t->l1 : 0.0f);
}

typedef struct {
    const cx_pool_shape *s;
    const lerp_tap *taps_h, *taps_w; /* [out_h], [out_w] */
    const int *first_h;              /* [in_h + 1] */
    const float *x;                  /* [planes, in_h, in_w] */
    float *y;                        /* [planes, out_h, out_w] */
    const float *dy;                 /* [planes, out_h, out_w] */
    float *dx;                       /* [planes, in_h, in_w], accumulated */
} resize_ctx;

/* Items are (plane, output row) pairs. */
static void resize_forward_task(void *arg, int64_t begin, int64_t end) {
    const resize_ctx *c = arg;
    const cx_pool_shape *s = c->s;
    const int in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, out_w = s->out_w;
    for (int64_t item = begin; item < end; item++) {
        int64_t plane = item / out_h;
        int oh = (int)(item % out_h);
        const lerp_tap th = c->taps_h[oh];
        const float *x = c->x + (size_t)plane * in_h * in_w;
        const float *row0 = x + (size_t)th.i0 * in_w;
        const float *row1 = x + (size_t)th.i1 * in_w;
        float *y_row = c->y + ((size_t)plane * out_h + oh) * out_w;
        for (int ow = 0; ow < out_w; ow++) {
            const lerp_tap tw = c->taps_w[ow];
            float top = row0[tw.i0] * tw.l0 + row0[tw.i1] * tw.l1;
            float bottom = row1[tw.i0] * tw.l0 + row1[tw.i1] * tw.l1;
            y_row[ow] = top * th.l0 + bottom * th.l1;
        }
    }
}

static inline void reading_outputs(const int *first, int i, int *begin, int *end) {
    *begin = first[i > 0 ? i - 1 : 0];
    *end = first[i + 1];
}

/* Items are (plane, input row) pairs; each writes one dx row. The output rows that
 * read input row i are first combined (a gather over that short range of rows), then
 * spread over the input columns: a serial scatter into this task's own row buffer, in
 * output order, added to dx once. */
static void resize_backward_task(void *arg, int64_t begin, int64_t end) {
    const resize_ctx *c = arg;
    const cx_pool_shape *s = c->s;
    const int in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, out_w = s->out_w;
    float *combined = cx_scratch(0, (size_t)out_w + (size_t)in_w); /* [out_w] */
    if (!combined) {
        cx_cpu_record_error(CX_ENOMEM, "resize_bilinear backward: out of scratch memory");
        return;
    }
    float *row_sum = combined + out_w; /* [in_w] */
    for (int64_t item = begin; item < end; item++) {
        int64_t plane = item / in_h;
        int i = (int)(item % in_h);
        float *dx_row = c->dx + ((size_t)plane * in_h + i) * in_w;
        int oh_begin, oh_end;
        reading_outputs(c->first_h, i, &oh_begin, &oh_end);
        if (oh_begin >= oh_end)
            continue;
        const float *dy = c->dy + (size_t)plane * out_h * out_w;
        for (int ow = 0; ow < out_w; ow++)
            combined[ow] = 0.0f;
        for (int oh = oh_begin; oh < oh_end; oh++) {
            float wh = tap_weight(&c->taps_h[oh], i);
            if (wh == 0.0f)
                continue;
            const float *dy_row = dy + (size_t)oh * out_w;
            for (int ow = 0; ow < out_w; ow++)
                combined[ow] += wh * dy_row[ow];
        }
        for (int j = 0; j < in_w; j++)
            row_sum[j] = 0.0f;
        for (int ow = 0; ow < out_w; ow++) {
            const lerp_tap tw = c->taps_w[ow];
            row_sum[tw.i0] += tw.l0 * combined[ow];
            row_sum[tw.i1] += tw.l1 * combined[ow];
        }
        for (int j = 0; j < in_w; j++)
            dx_row[j] += row_sum[j];
    }
}

/* Builds the tables in the caller's scratch slot 1; returns 0 when it cannot. */
static int prepare(const cx_pool_shape *s, resize_ctx *c) {
    size_t n_taps = (size_t)s->out_h + (size_t)s->out_w;
    size_t n_first = (size_t)s->in_h + 1;
    float *mem = cx_scratch(1, n_taps * (sizeof(lerp_tap) / sizeof(float)) + n_first);
    if (!mem)
        return 0;
    lerp_tap *taps_h = (lerp_tap *)mem, *taps_w = taps_h + s->out_h;
    int *first_h = (int *)(taps_w + s->out_w);
    build_axis(s->in_h, s->out_h, taps_h, first_h);
    build_axis(s->in_w, s->out_w, taps_w, NULL);
    c->s = s;
    c->taps_h = taps_h;
    c->taps_w = taps_w;
    c->first_h = first_h;
    return 1;
}

void cpu_resize_bilinear_forward(cx_backend *be, const cx_pool_shape *s, const float *x,
                                 float *y) {
    (void)be;
    resize_ctx c = {0};
    if (!prepare(s, &c)) {
        cx_cpu_record_error(CX_ENOMEM, "resize_bilinear forward: out of scratch memory");
        return;
    }
    c.x = x;
    c.y = y;
    int64_t grain = 8192 / (s->out_w > 0 ? s->out_w : 1);
    cx_parallel_for((int64_t)s->planes * s->out_h, grain > 0 ? grain : 1, resize_forward_task, &c);
}

void cpu_resize_bilinear_backward(cx_backend *be, const cx_pool_shape *s, const float *dy,
                                  float *dx) {
    (void)be;
    if (!dx)
        return;
    resize_ctx c = {0};
    if (!prepare(s, &c)) {
        cx_cpu_record_error(CX_ENOMEM, "resize_bilinear backward: out of scratch memory");
        return;
    }
    c.dy = dy;
    c.dx = dx;
    int64_t per_row = 3 * (int64_t)s->out_w * (s->out_h / (s->in_h > 0 ? s->in_h : 1) + 1);
    int64_t grain = 8192 / (per_row > 0 ? per_row : 1);
    cx_parallel_for((int64_t)s->planes * s->in_h, grain > 0 ? grain : 1, resize_backward_task, &c);
}
