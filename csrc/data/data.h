/* The data path in C: the one resize used for training, caching and predict, the
 * per-sample augmentation into float32 NCHW batches, and the procedural camouflage set.
 *
 * Layouts: images are uint8 HWC ([N,H,W,C], C = 3 unless said otherwise), masks uint8
 * [N,H,W] holding 0/255, network inputs float32 NCHW. All functions are deterministic:
 * the bytes they write do not depend on the thread count (each output element is
 * computed by one task, in a fixed order). */
#ifndef CX_DATA_H
#define CX_DATA_H

#include "../core/cx.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- resize (resize.c) -------------------------------------------------------------
 * Coordinates follow PyTorch's interpolate(align_corners=False): the output pixel d maps
 * to the source position s = (d + 0.5) * in / out - 0.5, clamped below at 0; the
 * neighbours are floor(s) and floor(s) + 1 (clamped at in - 1). No antialiasing when
 * shrinking (unlike Pillow), so every code path sees the same pixels.
 *
 * Bilinear, uint8 HWC with any channel count; the float result is rounded to nearest
 * (halves up): src [in_h, in_w, channels] -> dst [out_h, out_w, channels]. */
cx_status cx_resize_bilinear_u8(const uint8_t *src, int in_h, int in_w, int channels,
                                uint8_t *dst, int out_h, int out_w);
/* Masks: nearest neighbour at pixel centres (source index floor((d + 0.5) * in / out),
 * clamped at in - 1), then binarised: foreground (cx_mask_foreground, value > 128) ->
 * 255, else 0. At the same size this is the binarisation alone.
 * src [in_h, in_w] -> dst [out_h, out_w]. */
cx_status cx_resize_mask_u8(const uint8_t *src, int in_h, int in_w, uint8_t *dst, int out_h,
                            int out_w);
/* Bilinear on float planes (probability maps back to a GT's size), same coordinates:
 * src [n_planes, in_h, in_w] -> dst [n_planes, out_h, out_w]. */
cx_status cx_resize_bilinear_f32(const float *src, int64_t n_planes, int in_h, int in_w,
                                 float *dst, int out_h, int out_w);
/* Batched versions, parallel over images (cx_parallel_for):
 * src [n, in_h, in_w, channels] -> dst [n, out_h, out_w, channels]. */
cx_status cx_resize_bilinear_u8_batch(const uint8_t *src, int64_t n, int in_h, int in_w,
                                      int channels, uint8_t *dst, int out_h, int out_w);
cx_status cx_resize_mask_u8_batch(const uint8_t *src, int64_t n, int in_h, int in_w,
                                  uint8_t *dst, int out_h, int out_w);

/* ---- mask files (mask.c) -------------------------------------------------------------
 * The rules codext reads mask files by, from the file's levels src [n] (any layout) to
 * uint8 grey levels dst [n]:
 *   - levels above 255 (16-bit or integer masks saved as 0/65535, 0/1000, ...):
 *     foreground (255) where the level is above half the maximum, else 0;
 *   - otherwise the levels clipped to 0..255 (fractions dropped; a NaN anywhere makes
 *     this the rule, and reads as 0);
 *   - then a mask holding 0 and one other level v <= 128, and nothing else (saved as
 *     0/1, or as palette indices), becomes 0/255 (cx_mask_binary_level; a mask of one
 *     level everywhere is left as it is).
 * Foreground is then cx_mask_foreground (core/mask.h: level > 128) everywhere. */
typedef enum { CX_LEVEL_U8 = 0, CX_LEVEL_I64 = 1, CX_LEVEL_F64 = 2 } cx_level_dtype;
cx_status cx_mask_from_levels(const void *src, cx_level_dtype dtype, int64_t n, uint8_t *dst);
/* The last rule above on its own, for uint8 masks given as arrays (codext.data.from_arrays,
 * the metrics' ground truths, through codext/_masks.py): the level v <= 128 that a mask
 * [n] holding 0 and v (v > 0, both present) and nothing else uses for its foreground,
 * else 0 (the mask is read as it is). */
uint8_t cx_mask_binary_level(const uint8_t *mask, int64_t n);

/* ---- augmentation (augment.c) ------------------------------------------------------ */

/* Ranges of the random transforms. cx_augment_defaults() gives the training recipe:
 * flip 0.5, scale [0.75, 1.25], rotation +-15 degrees, jitter 0.2 for each of
 * brightness, contrast and saturation (factors uniform in [1 - j, 1 + j]). */
typedef struct {
    float flip_prob;
    float scale_min, scale_max;
    float rotate_deg;
    float brightness, contrast, saturation;
} cx_augment_config;

cx_augment_config cx_augment_defaults(void);

/* The transform of one sample, drawn from (seed, epoch, sample index) alone. */
typedef struct {
    int flip;
    float scale;          /* the image is scaled by this, then cropped or padded back */
    float angle;          /* radians, counter-clockwise, about the image centre */
    float offset_x, offset_y; /* crop origin in the scaled image (negative: padding) */
    float brightness, contrast, saturation;
} cx_augment_sample;

/* Draws sample `index`'s transform for epoch `epoch` (h, w: the image size). */
void cx_augment_draw(const cx_augment_config *cfg, uint64_t seed, uint64_t epoch,
                     uint64_t index, int h, int w, cx_augment_sample *out);

/* Builds a batch from a dataset held in memory.
 *   images  [n_images, h, w, 3] uint8, masks [n_images, h, w] uint8 (0/255) or NULL
 *   indices [batch] int64, each in [0, n_images); the RNG key of a sample is its index,
 *           so its augmentation does not depend on the batch it lands in
 *   x [batch, 3, h, w] float32: ImageNet-normalised ((v/255 - mean) / std)
 *   y [batch, 1, h, w] float32 in {0, 1} (cx_mask_foreground), or NULL
 * train = 0: no augmentation, only normalisation. cfg NULL: cx_augment_defaults(). */
cx_status cx_augment_batch(const uint8_t *images, const uint8_t *masks, int64_t n_images,
                           int h, int w, const int64_t *indices, int64_t batch, uint64_t seed,
                           uint64_t epoch, int train, const cx_augment_config *cfg, float *x,
                           float *y);

/* ---- synthetic camouflage set (synthetic.c) ----------------------------------------
 * images [n, size, size, 3] uint8, masks [n, size, size] uint8 (0/255). Image i of
 * split `stream` (0 train, 1 test) depends only on (seed, stream, first_index + i). */
cx_status cx_synthetic(int64_t n, int size, uint64_t seed, uint64_t stream, int64_t first_index,
                       uint8_t *images, uint8_t *masks);

#ifdef __cplusplus
}
#endif
#endif
