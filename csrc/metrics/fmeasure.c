/* F-measure (beta^2 = 0.3), adaptive and over 256 thresholds, from counts, following
 * PySODMetrics' Fmeasure.cal_adaptive_fm and cal_pr operation by operation. */
#include "metrics_internal.h"

#define CX_FMEASURE_BETA2 0.3

void cx_fmeasure(const cx_metric_prep *prep, const cx_threshold_counts *counts, double *adaptive,
                 double curve[CX_METRIC_LEVELS]) {
    const double beta2 = CX_FMEASURE_BETA2;
    const int64_t n_fg = prep->n_fg;

    /* Adaptive: 0 when nothing predicted intersects the foreground. */
    const int64_t intersection = counts->adaptive_fg;
    if (intersection == 0) {
        *adaptive = 0.0;
    } else {
        const double precision = (double)intersection / (double)(counts->adaptive_fg + counts->adaptive_bg);
        const double recall = (double)intersection / (double)n_fg;
        *adaptive = (1.0 + beta2) * precision * recall / (beta2 * precision + recall);
    }

    /* Curve: precision TP / P (P = 0 counts as 1), recall TP / max(|GT|, 1). */
    const double gt_count = (double)(n_fg > 1 ? n_fg : 1);
    int64_t fg_at_least = 0, bg_at_least = 0;
    for (int t = CX_METRIC_LEVELS - 1; t >= 0; t--) {
        fg_at_least += counts->hist_fg[t];
        bg_at_least += counts->hist_bg[t];
        const int64_t predicted = fg_at_least + bg_at_least;
        const double precision = (double)fg_at_least / (double)(predicted == 0 ? 1 : predicted);
        const double recall = (double)fg_at_least / gt_count;
        const double numerator = (1.0 + beta2) * precision * recall;
        const double denominator = numerator == 0.0 ? 1.0 : beta2 * precision + recall;
        curve[t] = numerator / denominator;
    }
}
