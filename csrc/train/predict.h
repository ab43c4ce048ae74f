/* Batch prediction: uint8 RGB images of any sizes in, foreground probabilities out at
 * sizes of the caller's choosing, in one call (Model.predict and the evaluation behind
 * validation use it).
 *
 * Per image b of the batch: the image [heights[b], widths[b], 3] is resized to
 * [size, size] (the data path's bilinear, cx_resize_bilinear_u8) and normalised as the
 * evaluation data path does (cx_augment_batch without augmentation); the batch runs
 * through the model in predict mode; sigmoid(p1) [size, size] is resized (bilinear,
 * cx_resize_bilinear_f32) to [out_heights[b], out_widths[b]] into probs[b].
 *
 * Never a plausible-looking map from a broken model: weights that are not finite (CPU
 * backend: checked before the forward, the first such parameter named) or a prediction
 * map that is not finite (cx_cod_probabilities) fail with CX_ERUNTIME. */
#ifndef CX_PREDICT_H
#define CX_PREDICT_H

#include "../data/data.h"
#include "../model/cod.h"

/* n >= 1 images; size: the model's input side (a multiple of 32). probs[b] holds
 * out_heights[b] * out_widths[b] floats; on failure their contents are unspecified. */
cx_status cx_cod_predict_batch(cx_cod_model *m, int64_t n, const uint8_t *const *images,
                               const int *heights, const int *widths, int size,
                               float *const *probs, const int *out_heights,
                               const int *out_widths);

#endif
