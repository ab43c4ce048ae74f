/* S-measure (structure measure, alpha 0.5) as PySODMetrics' Smeasure computes it.
 *
 *   y = mean(gt); y == 0: 1 - mean(pred); y == 1: mean(pred);
 *   else max(0, alpha * object + (1 - alpha) * region).
 *
 * The region score splits the image at the foreground centroid into four quadrants and
 * scores each with an SSIM whose outcome jumps (to 1) when both prediction and GT are
 * constant in the quadrant. Whether a constant prediction's quadrant mean equals the
 * constant exactly depends on the summation order, so quadrant means use NumPy's order
 * (cx_np_sum_block); the variances are continuous and use plain float64 sums.
 *
 * Empty quadrants (the centroid on the last row or column, e.g. a 1x2 image):
 * PySODMetrics takes the mean of an empty slice and returns NaN; codext lets an empty
 * quadrant contribute 0 (its area weight is 0 anyway). */
#include "metrics_internal.h"

#include <math.h>

#define CX_SMEASURE_ALPHA 0.5

/* Sums with 8 interleaved accumulators (a fixed order that the compiler can vectorise
 * without reassociating): lane k takes the items i with i % 8 == k. */
#define LANES 8
static double lanes_total(const double acc[LANES]) {
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* Object score: s(x) = 2 mean / (mean^2 + 1 + std + EPS) (std with ddof 1, 0 for a
 * single pixel) of pred on the foreground and of 1 - pred on the background, weighted
 * by the foreground share y. */
static double s_object(double mean, double std) {
    return 2.0 * mean / (mean * mean + 1.0 + std + CX_METRIC_EPS);
}

/* The same from the byte histograms of a uint8 prediction. */
static double object_score_u8(const cx_metric_prep *prep) {
    const int64_t n = prep->n_pixels, n_fg = prep->n_fg, n_bg = n - n_fg;
    double fg_sum = 0.0, bg_sum = 0.0; /* absent bytes have zero counts */
    for (int v = 0; v < 256; v++) {
        fg_sum += (double)prep->u8_count[1][v] * prep->u8_value[v];
        bg_sum += (double)prep->u8_count[0][v] * (1.0 - prep->u8_value[v]);
    }
    const double fg_mean = fg_sum / (double)n_fg, bg_mean = bg_sum / (double)n_bg;
    double fg_sq = 0.0, bg_sq = 0.0;
    for (int v = 0; v < 256; v++) {
        const double d_fg = prep->u8_value[v] - fg_mean, d_bg = (1.0 - prep->u8_value[v]) - bg_mean;
        fg_sq += (double)prep->u8_count[1][v] * (d_fg * d_fg);
        bg_sq += (double)prep->u8_count[0][v] * (d_bg * d_bg);
    }
    const double fg_std = n_fg > 1 ? sqrt(fg_sq / (double)(n_fg - 1)) : 0.0;
    const double bg_std = n_bg > 1 ? sqrt(bg_sq / (double)(n_bg - 1)) : 0.0;
    const double y = (double)n_fg / (double)n;
    return s_object(fg_mean, fg_std) * y + s_object(bg_mean, bg_std) * (1.0 - y);
}

static double object_score(const cx_metric_prep *prep) {
    if (prep->is_u8)
        return object_score_u8(prep);
    const double *pred = prep->pred;
    const uint8_t *gt = prep->gt;
    const int64_t n = prep->n_pixels, n_fg = prep->n_fg, n_bg = n - n_fg;
    double fg_acc[LANES] = {0}, bg_acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++) {
            const double p = pred[i + k];
            const int fg = gt[i + k];
            fg_acc[k] += fg ? p : 0.0;
            bg_acc[k] += fg ? 0.0 : 1.0 - p;
        }
    for (int k = 0; i < n; i++, k++) {
        fg_acc[k] += gt[i] ? pred[i] : 0.0;
        bg_acc[k] += gt[i] ? 0.0 : 1.0 - pred[i];
    }
    const double fg_mean = lanes_total(fg_acc) / (double)n_fg;
    const double bg_mean = lanes_total(bg_acc) / (double)n_bg;
    double fg_sq[LANES] = {0}, bg_sq[LANES] = {0};
    for (i = 0; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++) {
            const double p = pred[i + k];
            const int fg = gt[i + k];
            const double d_fg = p - fg_mean, d_bg = (1.0 - p) - bg_mean;
            fg_sq[k] += fg ? d_fg * d_fg : 0.0;
            bg_sq[k] += fg ? 0.0 : d_bg * d_bg;
        }
    for (int k = 0; i < n; i++, k++) {
        const double d_fg = pred[i] - fg_mean, d_bg = (1.0 - pred[i]) - bg_mean;
        fg_sq[k] += gt[i] ? d_fg * d_fg : 0.0;
        bg_sq[k] += gt[i] ? 0.0 : d_bg * d_bg;
    }
    const double fg_std = n_fg > 1 ? sqrt(lanes_total(fg_sq) / (double)(n_fg - 1)) : 0.0;
    const double bg_std = n_bg > 1 ? sqrt(lanes_total(bg_sq) / (double)(n_bg - 1)) : 0.0;
    const double y = (double)n_fg / (double)n;
    return s_object(fg_mean, fg_std) * y + s_object(bg_mean, bg_std) * (1.0 - y);
}

/* SSIM of the quadrant rows [r0, r1) x cols [c0, c1); 0 for an empty quadrant. */
static double quadrant_ssim(const cx_metric_prep *prep, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                            double *chunk) {
    const int64_t rows = r1 - r0, cols = c1 - c0, n = rows * cols, w = prep->width;
    if (n == 0)
        return 0.0;
    const double *pred = prep->pred + r0 * w + c0;
    const uint8_t *gt = prep->gt + r0 * w + c0;
    int64_t n_fg = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            n_fg += gt[r * w + c];
    const double x = cx_np_sum_block(pred, rows, cols, w, chunk) / (double)n;
    const double y = (double)n_fg / (double)n;
    const double gt_dev[2] = {0.0 - y, 1.0 - y};
    double xx[LANES] = {0}, yy[LANES] = {0}, xy[LANES] = {0};
    for (int64_t r = 0; r < rows; r++) {
        const double *pred_row = pred + r * w;
        const uint8_t *gt_row = gt + r * w;
        int64_t c = 0;
        for (; c + LANES <= cols; c += LANES)
            for (int k = 0; k < LANES; k++) {
                const double dx = pred_row[c + k] - x, dy = gt_dev[gt_row[c + k]];
                xx[k] += dx * dx;
                yy[k] += dy * dy;
                xy[k] += dx * dy;
            }
        for (int k = 0; c < cols; c++, k++) {
            const double dx = pred_row[c] - x, dy = gt_dev[gt_row[c]];
            xx[k] += dx * dx;
            yy[k] += dy * dy;
            xy[k] += dx * dy;
        }
    }
    const double sxx = lanes_total(xx), syy = lanes_total(yy), sxy = lanes_total(xy);
    const double denom = (double)(n - 1) + CX_METRIC_EPS;
    const double sigma_x = sxx / denom, sigma_y = syy / denom, sigma_xy = sxy / denom;
    const double alpha = 4.0 * x * y * sigma_xy;
    const double beta = (x * x + y * y) * (sigma_x + sigma_y);
    if (alpha != 0.0)
        return alpha / (beta + CX_METRIC_EPS);
    return beta == 0.0 ? 1.0 : 0.0;
}

static double region_score(const cx_metric_prep *prep, double *chunk) {
    const int64_t h = prep->height, w = prep->width, area = h * w;
    /* Centroid: round half to even of the mean foreground coordinate, plus 1. The sums
     * are exact integers, so the float64 quotient and its rounding match NumPy's. */
    int64_t cy, cx;
    if (prep->n_fg == 0) {
        cy = (int64_t)nearbyint((double)h / 2.0);
        cx = (int64_t)nearbyint((double)w / 2.0);
    } else {
        cy = (int64_t)nearbyint((double)prep->fg_row_sum / (double)prep->n_fg);
        cx = (int64_t)nearbyint((double)prep->fg_col_sum / (double)prep->n_fg);
    }
    cy += 1;
    cx += 1;
    if (cy > h) cy = h; /* cannot happen (the mean is at most h - 1); keeps slices valid */
    if (cx > w) cx = w;
    const double w_lt = (double)(cx * cy) / (double)area;
    const double w_rt = (double)(cy * (w - cx)) / (double)area;
    const double w_lb = (double)((h - cy) * cx) / (double)area;
    const double w_rb = 1.0 - w_lt - w_rt - w_lb;
    const double lt = quadrant_ssim(prep, 0, cy, 0, cx, chunk) * w_lt;
    const double rt = quadrant_ssim(prep, 0, cy, cx, w, chunk) * w_rt;
    const double lb = quadrant_ssim(prep, cy, h, 0, cx, chunk) * w_lb;
    const double rb = quadrant_ssim(prep, cy, h, cx, w, chunk) * w_rb;
    return lt + rt + lb + rb;
}

double cx_smeasure(const cx_metric_prep *prep, double *chunk) {
    const int64_t n = prep->n_pixels, n_fg = prep->n_fg;
    if (n_fg == 0)
        return 1.0 - prep->pred_mean;
    if (n_fg == n)
        return prep->pred_mean;
    const double score = object_score(prep) * CX_SMEASURE_ALPHA + region_score(prep, chunk) * (1.0 - CX_SMEASURE_ALPHA);
    return score > 0.0 ? score : 0.0;
}
