/* E-measure (enhanced alignment), adaptive and over 256 thresholds, from counts.
 *
 * For a binarised prediction the enhanced-alignment matrix takes one of four values
 * (prediction fg/bg x GT fg/bg), so the score needs only the four pixel counts. The
 * arithmetic follows PySODMetrics' cal_em_with_threshold operation by operation.
 *
 * Single-pixel images: PySODMetrics divides by H*W - 1 + EPS = EPS and returns about
 * 4.5e15; codext divides by 1 there, so the score stays in [0, 1]. */
#include "metrics_internal.h"

/* fg_fg: predicted fg on GT fg; fg_bg: predicted fg on GT bg; n_fg: GT fg; n: pixels. */
static double emeasure_from_counts(int64_t fg_fg, int64_t fg_bg, int64_t n_fg, int64_t n) {
    const int64_t pred_fg = fg_fg + fg_bg;
    const int64_t pred_bg = n - pred_fg;
    double enhanced_sum;
    if (n_fg == 0) {
        enhanced_sum = (double)pred_bg;
    } else if (n_fg == n) {
        enhanced_sum = (double)pred_fg;
    } else {
        const int64_t bg_fg = n_fg - fg_fg; /* predicted bg on GT fg */
        const int64_t bg_bg = pred_bg - bg_fg;
        const double mean_pred = (double)pred_fg / (double)n;
        const double mean_gt = (double)n_fg / (double)n;
        const double pred_fg_value = 1.0 - mean_pred, pred_bg_value = 0.0 - mean_pred;
        const double gt_fg_value = 1.0 - mean_gt, gt_bg_value = 0.0 - mean_gt;
        const int64_t part_numel[4] = {fg_fg, fg_bg, bg_fg, bg_bg};
        const double part_pred[4] = {pred_fg_value, pred_fg_value, pred_bg_value, pred_bg_value};
        const double part_gt[4] = {gt_fg_value, gt_bg_value, gt_fg_value, gt_bg_value};
        enhanced_sum = 0.0;
        for (int k = 0; k < 4; k++) {
            const double a = part_pred[k], b = part_gt[k];
            const double align = 2.0 * (a * b) / (a * a + b * b + CX_METRIC_EPS);
            const double shifted = align + 1.0;
            const double enhanced = shifted * shifted / 4.0;
            enhanced_sum += enhanced * (double)part_numel[k];
        }
    }
    const double denominator = n > 1 ? (double)(n - 1) + CX_METRIC_EPS : 1.0;
    return enhanced_sum / denominator;
}

void cx_emeasure(const cx_metric_prep *prep, const cx_threshold_counts *counts, double *adaptive,
                 double curve[CX_METRIC_LEVELS]) {
    const int64_t n = prep->n_pixels, n_fg = prep->n_fg;
    *adaptive = emeasure_from_counts(counts->adaptive_fg, counts->adaptive_bg, n_fg, n);
    /* Cumulative histograms from the top: pixels with level >= t. */
    int64_t fg_at_least = 0, bg_at_least = 0;
    for (int t = CX_METRIC_LEVELS - 1; t >= 0; t--) {
        fg_at_least += counts->hist_fg[t];
        bg_at_least += counts->hist_bg[t];
        curve[t] = emeasure_from_counts(fg_at_least, bg_at_least, n_fg, n);
    }
}
