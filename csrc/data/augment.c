/* Per-sample augmentation into a float32 NCHW batch (see data.h).
 *
 * Geometry. Flip, scale-crop and rotation are composed into one affine map from each
 * output pixel back to the source image, and the source is sampled once (bilinear for
 * the image, nearest for the mask), so no intermediate resampling blurs the pixels.
 * With continuous coordinates (pixel centres at +0.5) and c = (w/2, h/2):
 *   1. rotation about the centre:   q = R(-angle) (p - c) + c
 *   2. crop / pad:                  q += (offset_x, offset_y), a position in the image
 *                                   scaled by `scale` (size scale*w x scale*h); offsets
 *                                   are uniform in [0, scale*w - w] (negative when
 *                                   scale < 1: the shrunken image lands at a random
 *                                   place in the frame)
 *   3. undo the scale:              r = q / scale
 *   4. horizontal flip:             r.x = w - r.x
 * A pixel whose r falls outside [0, w) x [0, h) is fill: 0 after normalisation (the
 * ImageNet mean colour, a neutral grey) in the image and 0 (background) in the mask.
 * Inside, the image is sampled bilinearly at r - 0.5 with edge-clamped neighbours, and
 * the mask takes the pixel containing r, so image and mask agree on the valid region.
 *
 * Colour, applied in this fixed order to the sampled RGB (0..255, clamped after each):
 * brightness v *= b; contrast v = (v - m) * c + m where m is the mean grey level
 * (0.299 R + 0.587 G + 0.114 B) of the source image times b; saturation
 * v = g + (v - g) * s with g that pixel's grey level. Factors are uniform in [1 - j, 1 + j].
 *
 * Randomness: every parameter of a sample is one counter-based draw keyed by
 * (seed, epoch, sample index, parameter number), so the batch size, the rank and the
 * thread count never change a sample's transform. */
#include "data.h"
#include "../core/mask.h"
#include "../core/rng.h"

#include <math.h>
#include <string.h>

static const float imagenet_mean[3] = {0.485f, 0.456f, 0.406f};
static const float imagenet_std[3] = {0.229f, 0.224f, 0.225f};

/* Distinguishes augmentation draws from other users of the counter RNG. */
#define AUG_STREAM_BASE 0x6175676D656E7400ull /* "augment" */
#define AUG_DRAWS_PER_SAMPLE 16

cx_augment_config cx_augment_defaults(void) {
    cx_augment_config cfg = {0.5f, 0.75f, 1.25f, 15.0f, 0.2f, 0.2f, 0.2f};
    return cfg;
}

void cx_augment_draw(const cx_augment_config *cfg, uint64_t seed, uint64_t epoch, uint64_t index,
                     int h, int w, cx_augment_sample *out) {
    uint64_t stream = AUG_STREAM_BASE ^ (epoch * 0x9E3779B97F4A7C15ull);
    uint64_t base = index * AUG_DRAWS_PER_SAMPLE;
#define DRAW(k) cx_rng_uniform(seed, stream, base + (k))
    out->flip = DRAW(0) < cfg->flip_prob;
    out->scale = (float)(cfg->scale_min + (cfg->scale_max - cfg->scale_min) * DRAW(1));
    out->angle = (float)((2.0 * DRAW(2) - 1.0) * cfg->rotate_deg * (M_PI / 180.0));
    out->offset_x = (float)(DRAW(3) * ((double)out->scale * w - w));
    out->offset_y = (float)(DRAW(4) * ((double)out->scale * h - h));
    out->brightness = (float)(1.0 + cfg->brightness * (2.0 * DRAW(5) - 1.0));
    out->contrast = (float)(1.0 + cfg->contrast * (2.0 * DRAW(6) - 1.0));
    out->saturation = (float)(1.0 + cfg->saturation * (2.0 * DRAW(7) - 1.0));
#undef DRAW
}

/* Per-sample state of one batch: the drawn transform plus what the pixels need. */
typedef struct {
    cx_augment_sample t;
    float grey_mean;      /* source mean grey level times brightness */
    /* source position of output pixel (ox, oy), continuous (pixel centres at +0.5):
     * src_x = x_ox * ox + x_oy * oy + x_0, src_y = y_ox * ox + y_oy * oy + y_0 */
    float x_ox, x_oy, x_0;
    float y_ox, y_oy, y_0;
} sample_plan;

typedef struct {
    const uint8_t *images, *masks;
    int h, w;
    const int64_t *indices;
    int64_t batch;
    uint64_t seed, epoch;
    int train;
    const cx_augment_config *cfg;
    sample_plan *plans;
    float *x, *y;
} augment_job;

/* Mean grey level of an image [h, w, 3], from exact integer sums (weights x1000). */
static float grey_mean_u8(const uint8_t *img, int h, int w) {
    uint64_t total = 0;
    size_t n = (size_t)h * w;
    for (size_t i = 0; i < n; i++)
        total += 299u * img[3 * i] + 587u * img[3 * i + 1] + 114u * img[3 * i + 2];
    return (float)((double)total / (1000.0 * (double)n));
}

static void plan_task(void *ctx, int64_t begin, int64_t end) {
    augment_job *job = ctx;
    for (int64_t b = begin; b < end; b++) {
        sample_plan *p = &job->plans[b];
        memset(p, 0, sizeof *p);
        if (!job->train)
            continue;
        int64_t index = job->indices[b];
        cx_augment_draw(job->cfg, job->seed, job->epoch, (uint64_t)index, job->h, job->w, &p->t);
        const uint8_t *img = job->images + (size_t)index * job->h * job->w * 3;
        p->grey_mean = grey_mean_u8(img, job->h, job->w) * p->t.brightness;
        /* Output pixel centre (ox + 0.5, oy + 0.5) -> source position, as in the header
         * comment; folded into one affine map of (ox, oy). */
        double cosa = cos(p->t.angle), sina = sin(p->t.angle);
        double half_w = 0.5 * job->w, half_h = 0.5 * job->h, inv_s = 1.0 / p->t.scale;
        /* q = R(-a)(p - c) + c: R(-a) = [[cos, sin], [-sin, cos]] */
        double qx0 = cosa * (0.5 - half_w) + sina * (0.5 - half_h) + half_w + p->t.offset_x;
        double qy0 = -sina * (0.5 - half_w) + cosa * (0.5 - half_h) + half_h + p->t.offset_y;
        double ax = cosa * inv_s, bx = sina * inv_s, cx0 = qx0 * inv_s;
        double ay = -sina * inv_s, by = cosa * inv_s, cy0 = qy0 * inv_s;
        if (p->t.flip) {
            ax = -ax;
            bx = -bx;
            cx0 = job->w - cx0;
        }
        p->x_ox = (float)ax, p->x_oy = (float)bx, p->x_0 = (float)cx0;
        p->y_ox = (float)ay, p->y_oy = (float)by, p->y_0 = (float)cy0;
    }
}

static inline float clamp255(float v) { return v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v); }

/* One output row of sample b without augmentation. */
static void plain_row(const augment_job *job, int64_t b, int oy, const float *scale,
                      const float *bias) {
    int h = job->h, w = job->w;
    size_t plane = (size_t)h * w;
    int64_t index = job->indices[b];
    const uint8_t *src = job->images + ((size_t)index * plane + (size_t)oy * w) * 3;
    float *x = job->x + (size_t)b * 3 * plane + (size_t)oy * w;
    for (int ox = 0; ox < w; ox++)
        for (int ch = 0; ch < 3; ch++)
            x[ch * plane + ox] = (float)src[3 * ox + ch] * scale[ch] + bias[ch];
    if (job->y) {
        const uint8_t *m = job->masks + (size_t)index * plane + (size_t)oy * w;
        float *y = job->y + (size_t)b * plane + (size_t)oy * w;
        for (int ox = 0; ox < w; ox++)
            y[ox] = cx_mask_foreground(m[ox]) ? 1.0f : 0.0f;
    }
}

/* One output row of sample b with its transform. */
static void augmented_row(const augment_job *job, int64_t b, int oy, const float *scale,
                          const float *bias) {
    const sample_plan *p = &job->plans[b];
    int h = job->h, w = job->w;
    size_t plane = (size_t)h * w;
    int64_t index = job->indices[b];
    const uint8_t *img = job->images + (size_t)index * plane * 3;
    const uint8_t *mask = job->masks ? job->masks + (size_t)index * plane : NULL;
    float *x = job->x + (size_t)b * 3 * plane + (size_t)oy * w;
    float *y = job->y ? job->y + (size_t)b * plane + (size_t)oy * w : NULL;
    float bright = p->t.brightness, contrast = p->t.contrast, sat = p->t.saturation;
    float m = p->grey_mean;
    for (int ox = 0; ox < w; ox++) {
        float rx = p->x_ox * (float)ox + p->x_oy * (float)oy + p->x_0;
        float ry = p->y_ox * (float)ox + p->y_oy * (float)oy + p->y_0;
        if (!(rx >= 0.0f && rx < (float)w && ry >= 0.0f && ry < (float)h)) {
            for (int ch = 0; ch < 3; ch++)
                x[ch * plane + ox] = 0.0f;
            if (y)
                y[ox] = 0.0f;
            continue;
        }
        if (y) {
            int mx = (int)rx, my = (int)ry;
            mx = mx < w - 1 ? mx : w - 1;
            my = my < h - 1 ? my : h - 1;
            y[ox] = cx_mask_foreground(mask[(size_t)my * w + mx]) ? 1.0f : 0.0f;
        }
        float sx = rx - 0.5f, sy = ry - 0.5f;
        sx = sx < 0.0f ? 0.0f : (sx > (float)(w - 1) ? (float)(w - 1) : sx);
        sy = sy < 0.0f ? 0.0f : (sy > (float)(h - 1) ? (float)(h - 1) : sy);
        int x0 = (int)sx, y0 = (int)sy;
        int x1 = x0 < w - 1 ? x0 + 1 : x0, y1 = y0 < h - 1 ? y0 + 1 : y0;
        float fx = sx - (float)x0, fy = sy - (float)y0;
        const uint8_t *a = img + ((size_t)y0 * w + x0) * 3, *bb = img + ((size_t)y0 * w + x1) * 3;
        const uint8_t *c = img + ((size_t)y1 * w + x0) * 3, *d = img + ((size_t)y1 * w + x1) * 3;
        float rgb[3];
        for (int ch = 0; ch < 3; ch++) {
            float top = (1.0f - fx) * (float)a[ch] + fx * (float)bb[ch];
            float bottom = (1.0f - fx) * (float)c[ch] + fx * (float)d[ch];
            float v = clamp255(((1.0f - fy) * top + fy * bottom) * bright);
            rgb[ch] = clamp255((v - m) * contrast + m);
        }
        float grey = 0.299f * rgb[0] + 0.587f * rgb[1] + 0.114f * rgb[2];
        for (int ch = 0; ch < 3; ch++)
            x[ch * plane + ox] = clamp255(grey + (rgb[ch] - grey) * sat) * scale[ch] + bias[ch];
    }
}

static void rows_task(void *ctx, int64_t begin, int64_t end) {
    const augment_job *job = ctx;
    float scale[3], bias[3];
    for (int ch = 0; ch < 3; ch++) {
        scale[ch] = 1.0f / (255.0f * imagenet_std[ch]);
        bias[ch] = -imagenet_mean[ch] / imagenet_std[ch];
    }
    for (int64_t r = begin; r < end; r++) {
        int64_t b = r / job->h;
        int oy = (int)(r % job->h);
        if (job->train)
            augmented_row(job, b, oy, scale, bias);
        else
            plain_row(job, b, oy, scale, bias);
    }
}

cx_status cx_augment_batch(const uint8_t *images, const uint8_t *masks, int64_t n_images, int h,
                           int w, const int64_t *indices, int64_t batch, uint64_t seed,
                           uint64_t epoch, int train, const cx_augment_config *cfg, float *x,
                           float *y) {
    if (h < 1 || w < 1)
        return cx_fail(CX_EINVAL, "augment_batch: image size must be positive, got %dx%d", h, w);
    if (batch < 0)
        return cx_fail(CX_EINVAL, "augment_batch: negative batch size %lld", (long long)batch);
    if (y && !masks)
        return cx_fail(CX_EINVAL, "augment_batch: mask output requested without masks");
    for (int64_t b = 0; b < batch; b++)
        if (indices[b] < 0 || indices[b] >= n_images)
            return cx_fail(CX_EINVAL, "augment_batch: indices[%lld] = %lld is outside [0, %lld)",
                           (long long)b, (long long)indices[b], (long long)n_images);
    cx_augment_config defaults = cx_augment_defaults();
    if (!cfg)
        cfg = &defaults;
    if (!(cfg->scale_min > 0.0f && cfg->scale_max >= cfg->scale_min))
        return cx_fail(CX_EINVAL, "augment_batch: need 0 < scale_min <= scale_max, got %g, %g",
                       cfg->scale_min, cfg->scale_max);
    if (batch == 0)
        return CX_OK;
    size_t plan_floats = ((size_t)batch * sizeof(sample_plan) + sizeof(float) - 1) / sizeof(float);
    sample_plan *plans = (sample_plan *)cx_scratch(CX_SCRATCH_SLOTS - 1, plan_floats);
    if (!plans)
        return cx_fail(CX_ENOMEM, "augment_batch: no memory for %lld sample plans", (long long)batch);
    augment_job job = {images, masks, h, w, indices, batch, seed, epoch, train, cfg, plans, x, y};
    cx_parallel_for(batch, 1, plan_task, &job);
    /* ~32k pixels per task */
    int64_t grain = 32768 / w > 0 ? 32768 / w : 1;
    cx_parallel_for(batch * h, grain, rows_task, &job);
    return CX_OK;
}
