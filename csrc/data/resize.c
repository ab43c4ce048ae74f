/* The one resize of the data path (see data.h for the coordinate convention).
 *
 * Source positions are computed in double from the integer output index, so a given
 * (in, out) pair always maps a pixel to the same neighbours and weights, whatever the
 * caller; the blend itself runs in float. */
#include "data.h"
#include "../core/mask.h"

#include <math.h>

/* Neighbours and weight of output index d along an axis of `in` -> `out` pixels. */
typedef struct {
    int i0, i1;
    float w1; /* weight of i1; i0 gets 1 - w1 */
} lerp_tap;

static inline lerp_tap bilinear_tap(int d, int in, int out) {
    double src = ((double)d + 0.5) * (double)in / (double)out - 0.5;
    if (src < 0.0)
        src = 0.0;
    int i0 = (int)src;
    if (i0 > in - 1)
        i0 = in - 1;
    lerp_tap t;
    t.i0 = i0;
    t.i1 = i0 < in - 1 ? i0 + 1 : i0;
    t.w1 = (float)(src - (double)i0);
    return t;
}

static inline int nearest_index(int d, int in, int out) {
    int i = (int)floor(((double)d + 0.5) * (double)in / (double)out);
    return i < in - 1 ? i : in - 1;
}

static cx_status check_sizes(const char *what, int in_h, int in_w, int out_h, int out_w) {
    if (in_h < 1 || in_w < 1 || out_h < 1 || out_w < 1)
        return cx_fail(CX_EINVAL, "%s: sizes must be positive, got %dx%d -> %dx%d", what, in_h,
                       in_w, out_h, out_w);
    return CX_OK;
}

/* Rows [row_begin, row_end) of one bilinear uint8 resize. */
static void bilinear_u8_rows(const uint8_t *src, int in_h, int in_w, int channels, uint8_t *dst,
                             int out_h, int out_w, int row_begin, int row_end) {
    for (int oy = row_begin; oy < row_end; oy++) {
        lerp_tap ty = bilinear_tap(oy, in_h, out_h);
        const uint8_t *row0 = src + (size_t)ty.i0 * in_w * channels;
        const uint8_t *row1 = src + (size_t)ty.i1 * in_w * channels;
        uint8_t *out = dst + (size_t)oy * out_w * channels;
        float wy1 = ty.w1, wy0 = 1.0f - ty.w1;
        for (int ox = 0; ox < out_w; ox++) {
            lerp_tap tx = bilinear_tap(ox, in_w, out_w);
            float wx1 = tx.w1, wx0 = 1.0f - tx.w1;
            const uint8_t *a = row0 + (size_t)tx.i0 * channels, *b = row0 + (size_t)tx.i1 * channels;
            const uint8_t *c = row1 + (size_t)tx.i0 * channels, *d = row1 + (size_t)tx.i1 * channels;
            for (int ch = 0; ch < channels; ch++) {
                float top = wx0 * (float)a[ch] + wx1 * (float)b[ch];
                float bottom = wx0 * (float)c[ch] + wx1 * (float)d[ch];
                float v = wy0 * top + wy1 * bottom + 0.5f;
                out[(size_t)ox * channels + ch] = v >= 255.0f ? 255 : (uint8_t)v;
            }
        }
    }
}

static void mask_rows(const uint8_t *src, int in_h, int in_w, uint8_t *dst, int out_h, int out_w,
                      int row_begin, int row_end) {
    for (int oy = row_begin; oy < row_end; oy++) {
        const uint8_t *row = src + (size_t)nearest_index(oy, in_h, out_h) * in_w;
        uint8_t *out = dst + (size_t)oy * out_w;
        for (int ox = 0; ox < out_w; ox++)
            out[ox] = cx_mask_foreground(row[nearest_index(ox, in_w, out_w)]) ? 255 : 0;
    }
}

cx_status cx_resize_bilinear_u8(const uint8_t *src, int in_h, int in_w, int channels, uint8_t *dst,
                                int out_h, int out_w) {
    CX_TRY(check_sizes("resize_image", in_h, in_w, out_h, out_w));
    if (channels < 1)
        return cx_fail(CX_EINVAL, "resize_image: channels must be positive, got %d", channels);
    bilinear_u8_rows(src, in_h, in_w, channels, dst, out_h, out_w, 0, out_h);
    return CX_OK;
}

cx_status cx_resize_mask_u8(const uint8_t *src, int in_h, int in_w, uint8_t *dst, int out_h,
                            int out_w) {
    CX_TRY(check_sizes("resize_mask", in_h, in_w, out_h, out_w));
    mask_rows(src, in_h, in_w, dst, out_h, out_w, 0, out_h);
    return CX_OK;
}

/* ---- batched, parallel over (image, row) ---------------------------------------------- */

typedef struct {
    const void *src;
    void *dst;
    int in_h, in_w, channels, out_h, out_w;
} resize_job;

static void bilinear_u8_task(void *ctx, int64_t begin, int64_t end) {
    const resize_job *job = ctx;
    size_t in_size = (size_t)job->in_h * job->in_w * job->channels;
    size_t out_size = (size_t)job->out_h * job->out_w * job->channels;
    for (int64_t r = begin; r < end;) {
        int64_t image = r / job->out_h;
        int row = (int)(r % job->out_h);
        int row_end = (int)(end - image * job->out_h < job->out_h ? end - image * job->out_h : job->out_h);
        bilinear_u8_rows((const uint8_t *)job->src + image * in_size, job->in_h, job->in_w,
                         job->channels, (uint8_t *)job->dst + image * out_size, job->out_h,
                         job->out_w, row, row_end);
        r += row_end - row;
    }
}

static void mask_task(void *ctx, int64_t begin, int64_t end) {
    const resize_job *job = ctx;
    size_t in_size = (size_t)job->in_h * job->in_w, out_size = (size_t)job->out_h * job->out_w;
    for (int64_t r = begin; r < end;) {
        int64_t image = r / job->out_h;
        int row = (int)(r % job->out_h);
        int row_end = (int)(end - image * job->out_h < job->out_h ? end - image * job->out_h : job->out_h);
        mask_rows((const uint8_t *)job->src + image * in_size, job->in_h, job->in_w,
                  (uint8_t *)job->dst + image * out_size, job->out_h, job->out_w, row, row_end);
        r += row_end - row;
    }
}

static void bilinear_f32_task(void *ctx, int64_t begin, int64_t end) {
    const resize_job *job = ctx;
    size_t in_size = (size_t)job->in_h * job->in_w, out_size = (size_t)job->out_h * job->out_w;
    for (int64_t r = begin; r < end; r++) {
        int64_t plane = r / job->out_h;
        int oy = (int)(r % job->out_h);
        const float *src = (const float *)job->src + plane * in_size;
        float *out = (float *)job->dst + plane * out_size + (size_t)oy * job->out_w;
        lerp_tap ty = bilinear_tap(oy, job->in_h, job->out_h);
        const float *row0 = src + (size_t)ty.i0 * job->in_w, *row1 = src + (size_t)ty.i1 * job->in_w;
        float wy1 = ty.w1, wy0 = 1.0f - ty.w1;
        for (int ox = 0; ox < job->out_w; ox++) {
            lerp_tap tx = bilinear_tap(ox, job->in_w, job->out_w);
            float wx1 = tx.w1, wx0 = 1.0f - tx.w1;
            float top = wx0 * row0[tx.i0] + wx1 * row0[tx.i1];
            float bottom = wx0 * row1[tx.i0] + wx1 * row1[tx.i1];
            out[ox] = wy0 * top + wy1 * bottom;
        }
    }
}

/* Rows per task: enough work (~64k output values) to pay for the hand-off. */
static int64_t row_grain(int out_w, int channels) {
    int64_t per_row = (int64_t)out_w * channels;
    int64_t grain = per_row > 0 ? 65536 / per_row : 1;
    return grain < 1 ? 1 : grain;
}

cx_status cx_resize_bilinear_u8_batch(const uint8_t *src, int64_t n, int in_h, int in_w,
                                      int channels, uint8_t *dst, int out_h, int out_w) {
    CX_TRY(check_sizes("resize_image", in_h, in_w, out_h, out_w));
    if (channels < 1 || n < 0)
        return cx_fail(CX_EINVAL, "resize_image: bad channels %d or count %lld", channels, (long long)n);
    resize_job job = {src, dst, in_h, in_w, channels, out_h, out_w};
    cx_parallel_for(n * out_h, row_grain(out_w, channels), bilinear_u8_task, &job);
    return CX_OK;
}

cx_status cx_resize_mask_u8_batch(const uint8_t *src, int64_t n, int in_h, int in_w, uint8_t *dst,
                                  int out_h, int out_w) {
    CX_TRY(check_sizes("resize_mask", in_h, in_w, out_h, out_w));
    if (n < 0)
        return cx_fail(CX_EINVAL, "resize_mask: bad count %lld", (long long)n);
    resize_job job = {src, dst, in_h, in_w, 1, out_h, out_w};
    cx_parallel_for(n * out_h, row_grain(out_w, 1), mask_task, &job);
    return CX_OK;
}

cx_status cx_resize_bilinear_f32(const float *src, int64_t n_planes, int in_h, int in_w, float *dst,
                                 int out_h, int out_w) {
    CX_TRY(check_sizes("resize_float", in_h, in_w, out_h, out_w));
    if (n_planes < 0)
        return cx_fail(CX_EINVAL, "resize_float: bad plane count %lld", (long long)n_planes);
    resize_job job = {src, dst, in_h, in_w, 1, out_h, out_w};
    cx_parallel_for(n_planes * out_h, row_grain(out_w, 1), bilinear_f32_task, &job);
    return CX_OK;
}
