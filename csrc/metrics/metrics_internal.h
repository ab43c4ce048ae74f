/* Shared by the metric files: the prepared image, the per-thread workspace, NumPy's
 * summation order, and one function per metric family. Not part of the public API. */
#ifndef CX_METRICS_INTERNAL_H
#define CX_METRICS_INTERNAL_H

#include "metrics.h"

#include <float.h>

/* PySODMetrics' EPS: np.spacing(1), the machine epsilon of float64. */
#define CX_METRIC_EPS DBL_EPSILON
/* Largest image side: keeps every term of SciPy's float64 EDT arithmetic an exact
 * integer (below 2^53), so the int64 EDT here takes the same decisions. */
#define CX_METRIC_MAX_SIDE (1 << 17)
/* NumPy 1.x reduces in buffered chunks of this many elements (its default bufsize). */
#define CX_NP_CHUNK 8192

/* Per-thread buffers for one image of n_pixels = height * width. */
typedef struct {
    double *pred;           /* [n_pixels] prepared prediction in [0, 1] */
    uint8_t *gt;            /* [n_pixels] 1 foreground, 0 background */
    double *gauss_ring;     /* [7 * width] weighted F: horizontal Gaussian pass of 7 rows */
    int32_t *col_nearest;   /* [n_pixels] EDT pass 1, downward: last foreground row at or above */
    int32_t *below;         /* [width] EDT pass 1, upward sweep state */
    int32_t *row_nearest;   /* [width] EDT pass 1 result for one row */
    int32_t *sites;         /* [width] EDT pass 2 stack of candidate columns */
    int32_t *run_end;       /* [width] EDT pass 2: end of each candidate's run in the row */
    int64_t *site_sq;       /* [width] EDT pass 2: squared row offset of each candidate */
    double *row_terms;      /* [width] weighted F's background terms of one row */
    double *row_et;         /* [width] Et of one row */
    double *row_pred;       /* [width] prepared prediction of one row */
    double *chunk;          /* [CX_NP_CHUNK] gather buffer for strided NumPy sums */
} cx_metric_workspace;

/* Carves the workspace for a height x width image out of scratch slot `slot` of the
 * calling thread. CX_ENOMEM (with a message) when the allocation fails. */
cx_status cx_metric_workspace_get(int64_t height, int64_t width, int slot, cx_metric_workspace *ws);

/* An image after PySODMetrics' prepare_data, plus the statistics several metrics share. */
typedef struct {
    int64_t height, width, n_pixels;
    const double *pred;    /* [n_pixels] in [0, 1] */
    const uint8_t *gt;     /* [n_pixels] 0/1 */
    int64_t n_fg;          /* foreground pixels */
    int64_t fg_row_sum, fg_col_sum;               /* for the centroid */
    int64_t fg_row_min, fg_row_max, fg_col_min, fg_col_max; /* bounding box when n_fg > 0 */
    double pred_mean;      /* np.mean(pred) in NumPy 1.24's summation order */
    int64_t n_raw_pos, n_raw_pos_fg; /* raw probability >= 0.5: all, and on foreground */
    /* uint8 predictions only (is_u8): the prepared value of each byte, and how many
     * pixels hold each byte on the background [0] and the foreground [1]. Every pixel
     * with byte u has the same prepared value, so the threshold counts and the object
     * statistics follow from these without another pass over the image. */
    int is_u8;
    const uint8_t *pred_u8; /* [n_pixels] the input bytes */
    double u8_value[256];
    int64_t u8_count[2][256];
} cx_metric_prep;

/* Histograms and counts that the E- and F-measures share. */
typedef struct {
    int64_t hist_fg[CX_METRIC_LEVELS]; /* floor(pred * 255) on the foreground */
    int64_t hist_bg[CX_METRIC_LEVELS]; /* ... on the background */
    int64_t adaptive_fg, adaptive_bg;  /* pred >= min(2 * mean, 1), per GT class */
} cx_threshold_counts;

/* Why an image failed inside the parallel loop (the message is formatted afterwards on
 * the calling thread, since cx_fail's message is thread-local). */
typedef enum {
    CX_METRIC_FAIL_NONE = 0,
    CX_METRIC_FAIL_NOMEM = 1,
    CX_METRIC_FAIL_RANGE = 2, /* float prediction outside [0, 1] or not finite */
} cx_metric_failure;

/* ---- basic.c ---- */
/* np.add.reduce of a contiguous float64 array as NumPy 1.24 computes it: pairwise
 * summation inside chunks of CX_NP_CHUNK elements, chunks added left to right. */
double cx_np_sum(const double *x, int64_t n);
/* The same for the [rows, cols] block starting at x with row stride `stride`
 * (NumPy copies such a view into its buffer in row-major order). chunk [CX_NP_CHUNK]. */
double cx_np_sum_block(const double *x, int64_t rows, int64_t cols, int64_t stride, double *chunk);
/* PySODMetrics' prepare_data into ws->pred and ws->gt, and the shared statistics.
 * Returns CX_METRIC_FAIL_RANGE (with the offending value in *bad_value) for float
 * predictions outside [0, 1]. */
cx_metric_failure cx_metric_prepare(const cx_metric_image *image, const cx_metric_workspace *ws,
                                    cx_metric_prep *prep, double *bad_value);
/* Fills the threshold histograms and adaptive counts, and returns the MAE (summed in
 * NumPy's order without an image-sized buffer). */
double cx_threshold_counts_and_mae(const cx_metric_prep *prep, cx_threshold_counts *counts);
/* IoU and Dice of the raw prediction at 0.5 (1 when prediction and GT are both empty). */
void cx_iou_dice(const cx_metric_prep *prep, double *iou, double *dice);

/* ---- emeasure.c / fmeasure.c ---- */
void cx_emeasure(const cx_metric_prep *prep, const cx_threshold_counts *counts, double *adaptive,
                 double curve[CX_METRIC_LEVELS]);
void cx_fmeasure(const cx_metric_prep *prep, const cx_threshold_counts *counts, double *adaptive,
                 double curve[CX_METRIC_LEVELS]);

/* ---- smeasure.c ---- */
double cx_smeasure(const cx_metric_prep *prep, double *chunk);

/* ---- wfmeasure.c ---- */
double cx_wfmeasure(const cx_metric_prep *prep, const cx_metric_workspace *ws);
/* EDT pass 1 (mask [h, w], nonzero = foreground). Downward sweep: above[r, c] = the last
 * foreground row at or above r in column c, -1 if none. Upward sweep, one row at a time
 * from the bottom (below [w] carries the state, start it at -1): nearest_row[c] = the
 * foreground row nearest to `row` in column c, the upper one on a tie, -1 if none. */
void cx_edt_columns_down(const uint8_t *mask, int64_t height, int64_t width, int32_t *above);
void cx_edt_columns_up_row(const uint8_t *restrict mask_row, const int32_t *restrict above_row, int64_t row,
                           int64_t width, int32_t *restrict below, int32_t *restrict nearest_row);
/* EDT pass 2 for row `row`, candidates taken from columns [col_lo, col_hi] (all columns
 * holding foreground must be inside): returns n_runs and fills sites[0..n_runs) (columns) and
 * run_end[0..n_runs): pixels x in [run_end[l-1], run_end[l]) (run_end[-1] = 0) have
 * their nearest foreground pixel at (col_nearest_row[sites[l]], sites[l]), ties
 * resolved as SciPy does. Runs may be empty. 0 when the mask has no foreground.
 * sites, site_sq [w] scratch. */
int64_t cx_edt_row(const int32_t *col_nearest_row, int64_t row, int64_t width, int64_t col_lo, int64_t col_hi,
                   int32_t *sites, int64_t *site_sq, int32_t *run_end);

#endif
