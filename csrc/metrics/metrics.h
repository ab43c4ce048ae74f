/* COD benchmark metrics, computed per image at the GT's own resolution and averaged
 * over images exactly as PySODMetrics 1.6.2 does (definitions: docs/metrics.md).
 *
 * Inputs per image: a prediction [height, width] (uint8 0..255, or float32/float64
 * probabilities in [0, 1]) and a GT mask [height, width] (uint8, foreground where > 128),
 * both row-major and contiguous.
 *
 * The prediction is prepared as PySODMetrics' prepare_data does: uint8 / 255 (float
 * predictions are taken as they are, MATLAB's im2double of a double image), then min-max
 * normalised when max != min. IoU and Dice use the raw probability instead (uint8 / 255
 * or the float value, no normalisation) thresholded with >= 0.5.
 *
 * Curves are indexed by threshold t = 0..255: curve[t] scores the binarisation
 * floor(pred * 255) >= t (PySODMetrics stores the same 256 values in the reverse order). */
#ifndef CX_METRICS_H
#define CX_METRICS_H

#include <stdint.h>

#include "../core/cx.h"

#define CX_METRIC_LEVELS 256

typedef enum {
    CX_PRED_U8 = 0,
    CX_PRED_F32 = 1,
    CX_PRED_F64 = 2,
} cx_pred_dtype;

typedef struct {
    const void *pred;   /* [height, width], dtype pred_dtype */
    const uint8_t *gt;  /* [height, width], foreground where > 128 */
    cx_pred_dtype pred_dtype;
    int64_t height, width; /* >= 1 each, height * width < 2^31 */
} cx_metric_image;

/* One image's scores. */
typedef struct {
    double smeasure;          /* S-measure, alpha 0.5 */
    double wfmeasure;         /* weighted F-measure, beta 1 */
    double mae;               /* mean |pred - gt| */
    double adaptive_emeasure; /* E-measure at min(2 * mean(pred), 1) */
    double adaptive_fmeasure; /* F-measure (beta^2 0.3) at min(2 * mean(pred), 1) */
    double iou;               /* raw pred >= 0.5 vs gt; 1 when both are empty */
    double dice;              /* likewise */
    double emeasure_curve[CX_METRIC_LEVELS]; /* [t], see above */
    double fmeasure_curve[CX_METRIC_LEVELS];
} cx_image_metrics;

/* Dataset-level results: every scalar is the mean over images of the per-image value;
 * the curves are the per-threshold means over images, and mean_/max_ E and F are the
 * mean and max of those averaged curves. */
typedef struct {
    double smeasure, wfmeasure, mae;
    double adaptive_emeasure, mean_emeasure, max_emeasure;
    double adaptive_fmeasure, mean_fmeasure, max_fmeasure;
    double iou, dice;
    double emeasure_curve[CX_METRIC_LEVELS];
    double fmeasure_curve[CX_METRIC_LEVELS];
} cx_dataset_metrics;

/* Evaluates n_images pairs, in parallel over images (results do not depend on the
 * thread count). per_image [n_images] may be NULL; dataset may be NULL.
 * Errors (CX_EINVAL) name the image: empty or too large images, float predictions
 * outside [0, 1] or not finite. CX_ENOMEM when scratch memory cannot be had. */
cx_status cx_metrics_evaluate(const cx_metric_image *images, int64_t n_images,
                              cx_image_metrics *per_image, cx_dataset_metrics *dataset);

/* The dataset results of n >= 1 per-image results (the means cx_metrics_evaluate
 * returns, in the same summation order), so that results computed in chunks aggregate
 * exactly as one call would. CX_ENOMEM when its n-double buffer cannot be had. */
cx_status cx_metrics_aggregate(const cx_image_metrics *per_image, int64_t n,
                               cx_dataset_metrics *dataset);

/* Time per stage, summed over the images, run one image after another on the calling
 * thread (bench/metrics.py): [0] preparation shared by all metrics (GT > 128, the
 * normalised prediction, its mean, the IoU/Dice counts), [1] threshold histograms with
 * E-measure, F-measure, MAE, IoU and Dice, [2] S-measure, [3] weighted F-measure. */
#define CX_METRIC_PROFILE_STAGES 4
cx_status cx_metrics_profile(const cx_metric_image *images, int64_t n_images,
                             double seconds[CX_METRIC_PROFILE_STAGES]);

/* Exact Euclidean feature transform of a binary mask, as SciPy's
 * distance_transform_edt(mask == 0, return_indices=True) computes it (same nearest
 * pixel on ties): for each pixel, the nearest pixel where mask != 0.
 *   mask [height, width]; nearest_row, nearest_col [height, width] (int32; -1 when
 *   the mask is all zero); dist [height, width] or NULL: the Euclidean distance.
 * Uses the calling thread's scratch slot 1. */
cx_status cx_metrics_edt(const uint8_t *mask, int64_t height, int64_t width,
                         int32_t *nearest_row, int32_t *nearest_col, double *dist);

#endif
