/* NumPy's summation order, PySODMetrics' input preparation, MAE, IoU and Dice.
 *
 * Bit-level agreement with PySODMetrics matters where a value is compared: the adaptive
 * threshold min(2 * mean(pred), 1) and the S-measure's quadrant means decide single
 * pixels and whole quadrant scores, so those means reproduce NumPy 1.24's order
 * (cx_np_sum). Everything else only needs float64 accuracy. */
#include "metrics_internal.h"
#include "../core/mask.h"

#include <math.h>
#include <string.h>

/* ---- NumPy's float64 add.reduce ------------------------------------------------
 * Within one inner-loop call NumPy sums pairwise: fewer than 8 items one by one; up
 * to 128 items in 8 interleaved accumulators combined as ((0+1)+(2+3))+((4+5)+(6+7))
 * plus the tail one by one; more than 128 split at half rounded down to a multiple of
 * 8. NumPy 1.x feeds the reduction in buffered chunks of 8192 items (also for
 * contiguous arrays) and adds the chunk sums left to right, starting from 0. */
static double pairwise_sum(const double *x, int64_t n) {
    if (n < 8) {
        double sum = 0.0;
        for (int64_t i = 0; i < n; i++)
            sum += x[i];
        return sum;
    }
    if (n <= 128) {
        double acc[8];
        for (int j = 0; j < 8; j++)
            acc[j] = x[j];
        int64_t i;
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++)
                acc[j] += x[i + j];
        double sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        for (; i < n; i++)
            sum += x[i];
        return sum;
    }
    int64_t half = n / 2;
    half -= half % 8;
    return pairwise_sum(x, half) + pairwise_sum(x + half, n - half);
}

double cx_np_sum(const double *x, int64_t n) {
    double total = 0.0;
    for (int64_t start = 0; start < n; start += CX_NP_CHUNK) {
        int64_t len = n - start < CX_NP_CHUNK ? n - start : CX_NP_CHUNK;
        total += pairwise_sum(x + start, len);
    }
    return total;
}

double cx_np_sum_block(const double *x, int64_t rows, int64_t cols, int64_t stride, double *chunk) {
    if (cols == stride || rows == 1)
        return cx_np_sum(x, rows * cols);
    double total = 0.0;
    int64_t filled = 0;
    for (int64_t r = 0; r < rows; r++) {
        const double *row = x + r * stride;
        int64_t c = 0;
        while (c < cols) {
            int64_t take = cols - c;
            if (take > CX_NP_CHUNK - filled)
                take = CX_NP_CHUNK - filled;
            memcpy(chunk + filled, row + c, (size_t)take * sizeof(double));
            filled += take;
            c += take;
            if (filled == CX_NP_CHUNK) {
                total += pairwise_sum(chunk, filled);
                filled = 0;
            }
        }
    }
    if (filled > 0)
        total += pairwise_sum(chunk, filled);
    return total;
}

/* ---- workspace ---------------------------------------------------------------- */

static size_t round_up64(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

cx_status cx_metric_workspace_get(int64_t height, int64_t width, int slot, cx_metric_workspace *ws) {
    const size_t n = (size_t)(height * width), w = (size_t)width;
    struct {
        void **view;
        size_t bytes;
    } parts[] = {
        {(void **)&ws->pred, n * sizeof(double)},
        {(void **)&ws->gt, n},
        {(void **)&ws->col_nearest, n * sizeof(int32_t)},
        {(void **)&ws->gauss_ring, 7 * w * sizeof(double)},
        {(void **)&ws->below, w * sizeof(int32_t)},
        {(void **)&ws->row_nearest, w * sizeof(int32_t)},
        {(void **)&ws->sites, w * sizeof(int32_t)},
        {(void **)&ws->site_sq, w * sizeof(int64_t)},
        {(void **)&ws->run_end, w * sizeof(int32_t)},
        {(void **)&ws->row_terms, w * sizeof(double)},
        {(void **)&ws->row_et, w * sizeof(double)},
        {(void **)&ws->row_pred, w * sizeof(double)},
        {(void **)&ws->chunk, CX_NP_CHUNK * sizeof(double)},
    };
    const int n_parts = (int)(sizeof parts / sizeof parts[0]);
    size_t total = 0;
    for (int i = 0; i < n_parts; i++)
        total += round_up64(parts[i].bytes);
    char *base = (char *)cx_scratch(slot, total / sizeof(float) + 16);
    if (!base)
        return cx_fail(CX_ENOMEM, "metrics: cannot allocate %zu bytes of scratch memory for a %lldx%lld image",
                       total, (long long)height, (long long)width);
    for (int i = 0; i < n_parts; i++) {
        *parts[i].view = base;
        base += round_up64(parts[i].bytes);
    }
    return CX_OK;
}

/* ---- preparation -------------------------------------------------------------- */

/* GT > 128 into 0/1, with the foreground count, coordinate sums and bounding box.
 * col_count [width] scratch: foreground pixels per column. */
static void prepare_gt(const cx_metric_image *image, uint8_t *gt, int32_t *col_count, cx_metric_prep *prep) {
    const int64_t h = image->height, w = image->width;
    int64_t n_fg = 0, row_sum = 0, row_min = h, row_max = -1;
    for (int64_t c = 0; c < w; c++)
        col_count[c] = 0;
    for (int64_t r = 0; r < h; r++) {
        const uint8_t *src = image->gt + r * w;
        uint8_t *dst = gt + r * w;
        int64_t row_fg = 0;
        for (int64_t c = 0; c < w; c++) {
            const uint8_t fg = (uint8_t)cx_mask_foreground(src[c]);
            dst[c] = fg;
            col_count[c] += fg;
            row_fg += fg;
        }
        if (row_fg == 0)
            continue;
        n_fg += row_fg;
        row_sum += row_fg * r;
        row_min = r < row_min ? r : row_min;
        row_max = r;
    }
    int64_t col_sum = 0, col_min = w, col_max = -1;
    for (int64_t c = 0; c < w; c++) {
        if (col_count[c] == 0)
            continue;
        col_sum += (int64_t)col_count[c] * c;
        col_min = c < col_min ? c : col_min;
        col_max = c;
    }
    prep->n_fg = n_fg;
    prep->fg_row_sum = row_sum;
    prep->fg_col_sum = col_sum;
    prep->fg_row_min = row_min;
    prep->fg_row_max = row_max;
    prep->fg_col_min = col_min;
    prep->fg_col_max = col_max;
}

/* uint8: pred / 255, min-max normalised when max != min (a 256-entry table holds the
 * exact float64 values NumPy computes), and the byte histogram per GT class. */
static void prepare_pred_u8(const uint8_t *src, int64_t n, const uint8_t *gt, double *pred,
                            cx_metric_prep *prep) {
    uint8_t lo = 255, hi = 0;
    for (int64_t i = 0; i < n; i++) {
        lo = src[i] < lo ? src[i] : lo;
        hi = src[i] > hi ? src[i] : hi;
    }
    const double mn = lo / 255.0, mx = hi / 255.0;
    for (int v = 0; v < 256; v++) {
        const double x = v / 255.0;
        prep->u8_value[v] = hi != lo ? (x - mn) / (mx - mn) : x;
    }
    /* Four interleaved histograms, so that runs of equal bytes do not wait on one
     * counter; index = class * 256 + byte. Each sees n / 4 < 2^29 pixels. */
    int32_t counts[4][512];
    memset(counts, 0, sizeof counts);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        for (int k = 0; k < 4; k++) {
            const uint8_t u = src[i + k];
            pred[i + k] = prep->u8_value[u];
            counts[k][gt[i + k] * 256 + u]++;
        }
    }
    for (; i < n; i++) {
        pred[i] = prep->u8_value[src[i]];
        counts[0][gt[i] * 256 + src[i]]++;
    }
    int64_t raw_pos = 0, raw_pos_fg = 0;
    for (int v = 0; v < 256; v++) {
        const int64_t bg = (int64_t)counts[0][v] + counts[1][v] + counts[2][v] + counts[3][v];
        const int64_t fg = (int64_t)counts[0][256 + v] + counts[1][256 + v] + counts[2][256 + v] + counts[3][256 + v];
        prep->u8_count[0][v] = bg;
        prep->u8_count[1][v] = fg;
        if (v >= 128) { /* v / 255 >= 0.5 */
            raw_pos += bg + fg;
            raw_pos_fg += fg;
        }
    }
    prep->is_u8 = 1;
    prep->pred_u8 = src;
    prep->n_raw_pos = raw_pos;
    prep->n_raw_pos_fg = raw_pos_fg;
}

#define DEFINE_PREPARE_FLOAT(NAME, TYPE)                                                       \
    static cx_metric_failure NAME(const TYPE *src, int64_t n, const uint8_t *gt, double *pred, \
                                  cx_metric_prep *prep, double *bad_value) {                   \
        double lo = 1.0, hi = 0.0;                                                             \
        for (int64_t i = 0; i < n; i++) {                                                      \
            double x = (double)src[i];                                                         \
            if (!(x >= 0.0 && x <= 1.0)) {                                                     \
                *bad_value = x;                                                                \
                return CX_METRIC_FAIL_RANGE;                                                   \
            }                                                                                  \
            lo = x < lo ? x : lo;                                                              \
            hi = x > hi ? x : hi;                                                              \
        }                                                                                      \
        int64_t raw_pos = 0, raw_pos_fg = 0;                                                   \
        const double range = hi - lo;                                                          \
        for (int64_t i = 0; i < n; i++) {                                                      \
            double x = (double)src[i];                                                         \
            pred[i] = hi != lo ? (x - lo) / range : x;                                         \
            int pos = x >= 0.5;                                                                \
            raw_pos += pos;                                                                    \
            raw_pos_fg += pos & gt[i];                                                         \
        }                                                                                      \
        prep->n_raw_pos = raw_pos;                                                             \
        prep->n_raw_pos_fg = raw_pos_fg;                                                       \
        prep->is_u8 = 0;                                                                       \
        prep->pred_u8 = NULL;                                                                  \
        return CX_METRIC_FAIL_NONE;                                                            \
    }
DEFINE_PREPARE_FLOAT(prepare_pred_f32, float)
DEFINE_PREPARE_FLOAT(prepare_pred_f64, double)

cx_metric_failure cx_metric_prepare(const cx_metric_image *image, const cx_metric_workspace *ws,
                                    cx_metric_prep *prep, double *bad_value) {
    const int64_t n = image->height * image->width;
    prep->height = image->height;
    prep->width = image->width;
    prep->n_pixels = n;
    prep->pred = ws->pred;
    prep->gt = ws->gt;
    prepare_gt(image, ws->gt, ws->below, prep);
    cx_metric_failure failure = CX_METRIC_FAIL_NONE;
    switch (image->pred_dtype) {
    case CX_PRED_U8: prepare_pred_u8(image->pred, n, ws->gt, ws->pred, prep); break;
    case CX_PRED_F32: failure = prepare_pred_f32(image->pred, n, ws->gt, ws->pred, prep, bad_value); break;
    case CX_PRED_F64: failure = prepare_pred_f64(image->pred, n, ws->gt, ws->pred, prep, bad_value); break;
    }
    if (failure != CX_METRIC_FAIL_NONE)
        return failure;
    prep->pred_mean = cx_np_sum(ws->pred, n) / (double)n;
    return CX_METRIC_FAIL_NONE;
}

/* ---- threshold statistics, MAE, IoU, Dice ---------------------------------------- */

/* NumPy's order for sum(|pred - gt|) (the pairwise_sum recursion), computing the terms
 * of each leaf block (<= 128 items) into a small buffer instead of an image-sized one. */
static double pairwise_abs_error(const double *pred, const uint8_t *gt, int64_t n) {
    if (n <= 128) {
        double terms[128];
        for (int64_t i = 0; i < n; i++)
            terms[i] = fabs(pred[i] - (double)gt[i]);
        return pairwise_sum(terms, n);
    }
    int64_t half = n / 2;
    half -= half % 8;
    return pairwise_abs_error(pred, gt, half) + pairwise_abs_error(pred + half, gt + half, n - half);
}

static double mean_abs_error(const cx_metric_prep *prep) {
    const int64_t n = prep->n_pixels;
    double total = 0.0;
    for (int64_t start = 0; start < n; start += CX_NP_CHUNK) {
        const int64_t len = n - start < CX_NP_CHUNK ? n - start : CX_NP_CHUNK;
        total += pairwise_abs_error(prep->pred + start, prep->gt + start, len);
    }
    return total / (double)n;
}

double cx_threshold_counts_and_mae(const cx_metric_prep *prep, cx_threshold_counts *counts) {
    memset(counts, 0, sizeof *counts);
    const double twice_mean = 2.0 * prep->pred_mean;
    const double threshold = twice_mean < 1.0 ? twice_mean : 1.0;
    if (prep->is_u8) {
        for (int v = 0; v < 256; v++) {
            const int64_t bg = prep->u8_count[0][v], fg = prep->u8_count[1][v];
            if (bg + fg == 0) /* absent bytes map outside [0, 1] after min-max */
                continue;
            const double p = prep->u8_value[v];
            const int level = (int)(p * 255.0); /* (pred * 255).astype(np.uint8) */
            counts->hist_bg[level] += bg;
            counts->hist_fg[level] += fg;
            if (p >= threshold) {
                counts->adaptive_bg += bg;
                counts->adaptive_fg += fg;
            }
        }
        return mean_abs_error(prep);
    }
    const double *pred = prep->pred;
    const uint8_t *gt = prep->gt;
    int64_t adaptive[2] = {0, 0};
    int64_t *hist[2] = {counts->hist_bg, counts->hist_fg};
    for (int64_t i = 0; i < prep->n_pixels; i++) {
        const double p = pred[i];
        const int fg = gt[i];
        hist[fg][(int)(p * 255.0)]++;
        adaptive[fg] += p >= threshold;
    }
    counts->adaptive_bg = adaptive[0];
    counts->adaptive_fg = adaptive[1];
    return mean_abs_error(prep);
}

void cx_iou_dice(const cx_metric_prep *prep, double *iou, double *dice) {
    const int64_t inter = prep->n_raw_pos_fg;
    const int64_t sizes = prep->n_raw_pos + prep->n_fg;
    if (sizes == 0) {
        *iou = 1.0;
        *dice = 1.0;
        return;
    }
    *iou = (double)inter / (double)(sizes - inter);
    *dice = 2.0 * (double)inter / (double)sizes;
}
