/* Batch prediction (see predict.h). */
#include "predict.h"

#include <math.h>
#include <string.h>

cx_status cx_cod_predict_batch(cx_cod_model *m, int64_t n, const uint8_t *const *images,
                               const int *heights, const int *widths, int size,
                               float *const *probs, const int *out_heights,
                               const int *out_widths) {
    if (n < 1 || n > INT32_MAX)
        return cx_fail(CX_EINVAL, "predict: batch of %lld images", (long long)n);
    if (size < 1)
        return cx_fail(CX_EINVAL, "predict: image size %d", size);
    for (int64_t b = 0; b < n; b++)
        if (heights[b] < 1 || widths[b] < 1 || out_heights[b] < 1 || out_widths[b] < 1)
            return cx_fail(CX_EINVAL, "predict: image %lld is %dx%d, output %dx%d", (long long)b,
                           heights[b], widths[b], out_heights[b], out_widths[b]);
    if (m->be == cx_backend_cpu()) { /* weights elsewhere: the output check below */
        float bad = 0.0f;
        int i = cx_params_first_nonfinite(&m->table, m->params, &bad);
        if (i >= 0)
            return cx_fail(CX_ERUNTIME, "the model's weights are not finite (first: %s = %g)",
                           m->table.items[i].name, isnan(bad) ? fabs((double)bad) : (double)bad);
    }
    size_t plane = (size_t)size * size;
    uint8_t *resized = cx_aligned_alloc((size_t)n * plane * 3);
    float *x = cx_aligned_alloc((size_t)n * 3 * plane * sizeof(float));
    float *p1 = cx_aligned_alloc((size_t)n * plane * sizeof(float));
    int64_t *indices = cx_aligned_alloc((size_t)n * sizeof(int64_t));
    cx_status st = CX_OK;
    if (!resized || !x || !p1 || !indices)
        st = cx_fail(CX_ENOMEM, "predict: out of memory for a batch of %lld images at %dx%d",
                     (long long)n, size, size);
    for (int64_t b = 0; st == CX_OK && b < n; b++) {
        st = cx_resize_bilinear_u8(images[b], heights[b], widths[b], 3,
                                   resized + (size_t)b * plane * 3, size, size);
        indices[b] = b;
    }
    if (st == CX_OK)
        st = cx_augment_batch(resized, NULL, n, size, size, indices, n, 0, 0, 0, NULL, x, NULL);
    if (st == CX_OK)
        st = cx_cod_forward(m, x, (int)n, size, size, CX_COD_PREDICT);
    if (st == CX_OK)
        st = cx_cod_probabilities(m, p1);
    for (int64_t b = 0; st == CX_OK && b < n; b++)
        st = cx_resize_bilinear_f32(p1 + (size_t)b * plane, 1, size, size, probs[b],
                                    out_heights[b], out_widths[b]);
    cx_aligned_free(resized);
    cx_aligned_free(x);
    cx_aligned_free(p1);
    cx_aligned_free(indices);
    return st;
}
