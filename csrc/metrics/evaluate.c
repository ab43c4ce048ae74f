/* The per-image driver: every metric of one image in one task, images in parallel,
 * then the dataset means in a fixed order (results do not depend on the thread count). */
#include "metrics_internal.h"

#include <stddef.h>
#include <string.h>
#include <time.h>

typedef struct {
    const cx_metric_image *images;
    cx_image_metrics *results;   /* [n_images] */
    uint8_t *failures;           /* [n_images] cx_metric_failure */
    double *bad_values;          /* [n_images] the offending prediction value */
} evaluate_job;

static cx_metric_failure evaluate_one(const cx_metric_image *image, cx_image_metrics *out, double *bad_value) {
    cx_metric_workspace ws;
    if (cx_metric_workspace_get(image->height, image->width, 0, &ws) != CX_OK) {
        cx_clear_error();
        return CX_METRIC_FAIL_NOMEM;
    }
    cx_metric_prep prep;
    cx_metric_failure failure = cx_metric_prepare(image, &ws, &prep, bad_value);
    if (failure != CX_METRIC_FAIL_NONE)
        return failure;
    cx_threshold_counts counts;
    out->mae = cx_threshold_counts_and_mae(&prep, &counts);
    cx_emeasure(&prep, &counts, &out->adaptive_emeasure, out->emeasure_curve);
    cx_fmeasure(&prep, &counts, &out->adaptive_fmeasure, out->fmeasure_curve);
    cx_iou_dice(&prep, &out->iou, &out->dice);
    out->smeasure = cx_smeasure(&prep, ws.chunk);
    out->wfmeasure = cx_wfmeasure(&prep, &ws);
    return CX_METRIC_FAIL_NONE;
}

static void evaluate_range(void *ctx, int64_t begin, int64_t end) {
    evaluate_job *job = ctx;
    for (int64_t i = begin; i < end; i++)
        job->failures[i] = (uint8_t)evaluate_one(&job->images[i], &job->results[i], &job->bad_values[i]);
}

static cx_status check_images(const cx_metric_image *images, int64_t n_images) {
    if (n_images < 1)
        return cx_fail(CX_EINVAL, "metrics: no images to evaluate");
    for (int64_t i = 0; i < n_images; i++) {
        const cx_metric_image *im = &images[i];
        if (!im->pred || !im->gt)
            return cx_fail(CX_EINVAL, "metrics: image %lld has no data", (long long)i);
        if (im->height < 1 || im->width < 1)
            return cx_fail(CX_EINVAL, "metrics: image %lld is empty (%lldx%lld)", (long long)i,
                           (long long)im->height, (long long)im->width);
        if (im->height * im->width >= ((int64_t)1 << 31) || im->height > CX_METRIC_MAX_SIDE ||
            im->width > CX_METRIC_MAX_SIDE)
            return cx_fail(CX_EINVAL, "metrics: image %lld is %lldx%lld; at most 2^31 - 1 pixels and 2^17 per side",
                           (long long)i, (long long)im->height, (long long)im->width);
        if (im->pred_dtype != CX_PRED_U8 && im->pred_dtype != CX_PRED_F32 && im->pred_dtype != CX_PRED_F64)
            return cx_fail(CX_EINVAL, "metrics: image %lld has an unknown prediction dtype code %d",
                           (long long)i, (int)im->pred_dtype);
    }
    return CX_OK;
}

/* Dataset means: scalars as np.mean over images (NumPy's order); curves as
 * np.mean(axis=0) (images added in order per threshold). */
static void aggregate(const cx_image_metrics *results, int64_t n, double *buffer, cx_dataset_metrics *out) {
    const size_t offsets[7] = {
        offsetof(cx_image_metrics, smeasure), offsetof(cx_image_metrics, wfmeasure),
        offsetof(cx_image_metrics, mae), offsetof(cx_image_metrics, adaptive_emeasure),
        offsetof(cx_image_metrics, adaptive_fmeasure), offsetof(cx_image_metrics, iou),
        offsetof(cx_image_metrics, dice),
    };
    double means[7];
    for (int k = 0; k < 7; k++) {
        for (int64_t i = 0; i < n; i++)
            buffer[i] = *(const double *)((const char *)&results[i] + offsets[k]);
        means[k] = cx_np_sum(buffer, n) / (double)n;
    }
    out->smeasure = means[0];
    out->wfmeasure = means[1];
    out->mae = means[2];
    out->adaptive_emeasure = means[3];
    out->adaptive_fmeasure = means[4];
    out->iou = means[5];
    out->dice = means[6];
    for (int t = 0; t < CX_METRIC_LEVELS; t++) {
        double em = 0.0, fm = 0.0;
        for (int64_t i = 0; i < n; i++) {
            em += results[i].emeasure_curve[t];
            fm += results[i].fmeasure_curve[t];
        }
        out->emeasure_curve[t] = em / (double)n;
        out->fmeasure_curve[t] = fm / (double)n;
    }
    out->mean_emeasure = cx_np_sum(out->emeasure_curve, CX_METRIC_LEVELS) / CX_METRIC_LEVELS;
    out->mean_fmeasure = cx_np_sum(out->fmeasure_curve, CX_METRIC_LEVELS) / CX_METRIC_LEVELS;
    out->max_emeasure = out->emeasure_curve[0];
    out->max_fmeasure = out->fmeasure_curve[0];
    for (int t = 1; t < CX_METRIC_LEVELS; t++) {
        if (out->emeasure_curve[t] > out->max_emeasure) out->max_emeasure = out->emeasure_curve[t];
        if (out->fmeasure_curve[t] > out->max_fmeasure) out->max_fmeasure = out->fmeasure_curve[t];
    }
}

cx_status cx_metrics_aggregate(const cx_image_metrics *per_image, int64_t n,
                               cx_dataset_metrics *dataset) {
    if (n < 1)
        return cx_fail(CX_EINVAL, "metrics: no per-image results to aggregate");
    double *buffer = cx_aligned_alloc((size_t)n * sizeof(double));
    if (!buffer)
        return cx_fail(CX_ENOMEM, "metrics: cannot allocate the means of %lld images", (long long)n);
    aggregate(per_image, n, buffer, dataset);
    cx_aligned_free(buffer);
    return CX_OK;
}

cx_status cx_metrics_evaluate(const cx_metric_image *images, int64_t n_images,
                              cx_image_metrics *per_image, cx_dataset_metrics *dataset) {
    CX_TRY(check_images(images, n_images));
    cx_image_metrics *results = per_image;
    uint8_t *failures = cx_aligned_alloc((size_t)n_images);
    double *values = cx_aligned_alloc((size_t)n_images * sizeof(double));
    if (!results)
        results = cx_aligned_alloc((size_t)n_images * sizeof(cx_image_metrics));
    cx_status status = CX_OK;
    if (!failures || !values || !results) {
        status = cx_fail(CX_ENOMEM, "metrics: cannot allocate results for %lld images", (long long)n_images);
        goto done;
    }
    evaluate_job job = {images, results, failures, values};
    cx_parallel_for(n_images, 1, evaluate_range, &job);
    for (int64_t i = 0; i < n_images; i++) {
        const cx_metric_image *im = &images[i];
        if (failures[i] == CX_METRIC_FAIL_NOMEM) {
            status = cx_fail(CX_ENOMEM, "metrics: out of scratch memory for image %lld (%lldx%lld)",
                             (long long)i, (long long)im->height, (long long)im->width);
            goto done;
        }
        if (failures[i] == CX_METRIC_FAIL_RANGE) {
            status = cx_fail(CX_EINVAL,
                             "metrics: prediction %lld holds %g; float predictions must be probabilities "
                             "in [0, 1] (uint8 predictions are read as 0..255)",
                             (long long)i, values[i]);
            goto done;
        }
    }
    if (dataset)
        aggregate(results, n_images, values, dataset);
done:
    cx_aligned_free(failures);
    cx_aligned_free(values);
    if (results != per_image)
        cx_aligned_free(results);
    return status;
}

/* ---- profiling (bench/metrics.py) --------------------------------------------------- */

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

cx_status cx_metrics_profile(const cx_metric_image *images, int64_t n_images,
                             double seconds[CX_METRIC_PROFILE_STAGES]) {
    CX_TRY(check_images(images, n_images));
    for (int k = 0; k < CX_METRIC_PROFILE_STAGES; k++)
        seconds[k] = 0.0;
    for (int64_t i = 0; i < n_images; i++) {
        const cx_metric_image *image = &images[i];
        cx_image_metrics out;
        cx_metric_workspace ws;
        CX_TRY(cx_metric_workspace_get(image->height, image->width, 0, &ws));
        double t0 = now_seconds(), bad_value = 0.0;
        cx_metric_prep prep;
        if (cx_metric_prepare(image, &ws, &prep, &bad_value) != CX_METRIC_FAIL_NONE)
            return cx_fail(CX_EINVAL, "metrics: prediction %lld holds %g, outside [0, 1]", (long long)i, bad_value);
        double t1 = now_seconds();
        cx_threshold_counts counts;
        out.mae = cx_threshold_counts_and_mae(&prep, &counts);
        cx_emeasure(&prep, &counts, &out.adaptive_emeasure, out.emeasure_curve);
        cx_fmeasure(&prep, &counts, &out.adaptive_fmeasure, out.fmeasure_curve);
        cx_iou_dice(&prep, &out.iou, &out.dice);
        double t2 = now_seconds();
        out.smeasure = cx_smeasure(&prep, ws.chunk);
        double t3 = now_seconds();
        out.wfmeasure = cx_wfmeasure(&prep, &ws);
        double t4 = now_seconds();
        seconds[0] += t1 - t0;
        seconds[1] += t2 - t1;
        seconds[2] += t3 - t2;
        seconds[3] += t4 - t3;
    }
    return CX_OK;
}
