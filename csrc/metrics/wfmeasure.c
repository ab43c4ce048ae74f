/* Weighted F-measure (beta 1) as PySODMetrics' WeightedFmeasure computes it, with the
 * exact Euclidean distance transform (EDT) it takes from SciPy.
 *
 *   E  = |pred - gt|; Et = E, but each background pixel takes E of its nearest
 *        foreground pixel (SciPy's choice on ties, see below);
 *   EA = Et convolved with the 7x7 Gaussian (MATLAB fspecial, sigma 5), zero padding
 *        (scipy.ndimage.convolve mode "constant", cval 0);
 *   MIN = min(E, EA) on the foreground (EA < E picks EA), E on the background;
 *   B  = 2 - exp(ln(0.5) / 5 * dist) on the background, 1 on the foreground;
 *   Ew = MIN * B; TPw = |gt| - sum(Ew[gt]); FPw = sum(Ew[~gt]);
 *   R = 1 - mean(Ew[gt]); P = TPw / (TPw + FPw + EPS); Q = 2RP / (R + P + EPS);
 *   Q = 0 when the GT is empty.
 *
 * EDT: the two-pass algorithm of Maurer, Qi and Raghavan (2003) that SciPy implements,
 * O(H*W). Pass 1 finds in each column the nearest foreground row (the upper one on a
 * tie) with a downward and an upward sweep; the upward sweep runs row by row (bottom
 * up) together with pass 2, since rows are independent there. Pass 2 runs along each
 * row over the lower envelope of the column candidates, with SciPy's removal test and
 * its tie rule (of equally near candidates, the one met first in envelope order), in
 * exact integer arithmetic where SciPy's float64 arithmetic is exact too (sides up to
 * 2^17). The nearest pixel only matters through Et, and reproducing SciPy's choice keeps
 * Et identical: a different tie rule moves wF by up to a few percent on small images.
 *
 * EA is needed only on the foreground, so the separable Gaussian runs over the
 * foreground's columns and rows (widened by 3), streaming with the EDT's row loop. */
#include "metrics_internal.h"

#include <math.h>
#include <pthread.h>
#include <string.h>
#include <stdint.h>

#define GAUSS_RADIUS 3
#define GAUSS_SIZE 7
#define GAUSS_SIGMA 5.0
/* B = 2 - exp(ln(0.5) / 5 * d) = 2 - 2^(-d / 5), tabulated by row and column offset
 * (|dr|, |dc| < IMPORTANCE_SPAN), so that a run of pixels with the same nearest
 * foreground pixel reads one table row in order. From d = 265 on, 2^(-d / 5) is at most
 * half an ulp of 2 and B rounds to 2.0; the table stops a little after that (578 KB, so
 * that it mostly stays in L2 beside the image), pixels beyond it compute the same
 * expression directly while d < 363, and B is exactly 2.0 from there on (2^(-d / 5) <
 * 2^-72), as in NumPy. */
#define IMPORTANCE_SPAN 272
#define IMPORTANCE_EXACT_D2 (363 * 363)

static double gauss_weights[GAUSS_SIZE]; /* 1-D factor of fspecial('gaussian', 7, 5) */
/* [|dr|][|dc|] 2 - exp(ln(0.5) / 5 * sqrt(dr^2 + dc^2)) */
static double importance_table[IMPORTANCE_SPAN * IMPORTANCE_SPAN];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static double importance_exact(int64_t d2) {
    const double slope = log(0.5) / 5.0; /* PySODMetrics: np.log(0.5) / 5 * Dst */
    return 2.0 - exp(slope * sqrt((double)d2));
}

static void init_tables(void) {
    double total = 0.0;
    for (int i = 0; i < GAUSS_SIZE; i++) {
        const double t = (double)(i - GAUSS_RADIUS);
        gauss_weights[i] = exp(-(t * t) / (2.0 * GAUSS_SIGMA * GAUSS_SIGMA));
        total += gauss_weights[i];
    }
    for (int i = 0; i < GAUSS_SIZE; i++)
        gauss_weights[i] /= total;
    for (int dr = 0; dr < IMPORTANCE_SPAN; dr++)
        for (int dc = 0; dc < IMPORTANCE_SPAN; dc++)
            importance_table[dr * IMPORTANCE_SPAN + dc] = importance_exact(dr * dr + dc * dc);
}

/* B beyond the table. */
static double importance_far(int64_t d2) {
    return d2 < IMPORTANCE_EXACT_D2 ? importance_exact(d2) : 2.0;
}

/* Sum in 8 interleaved lanes (a fixed order the compiler can vectorise). */
static double lane_sum(const double *x, int64_t n) {
    double acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += x[i + k];
    for (int k = 0; i < n; i++, k++)
        acc[k] += x[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* ---- EDT ------------------------------------------------------------------------ */

void cx_edt_columns_down(const uint8_t *mask, int64_t height, int64_t width, int32_t *above) {
    for (int64_t c = 0; c < width; c++)
        above[c] = mask[c] ? 0 : -1;
    for (int64_t r = 1; r < height; r++) {
        const uint8_t *restrict m = mask + r * width;
        const int32_t *restrict prev = above + (r - 1) * width;
        int32_t *restrict cur = above + r * width;
        const int32_t row = (int32_t)r;
        for (int64_t c = 0; c < width; c++) { /* loads first, then a select: vectorises */
            const int32_t from_above = prev[c];
            cur[c] = m[c] ? row : from_above;
        }
    }
}

void cx_edt_columns_up_row(const uint8_t *restrict mask_row, const int32_t *restrict above_row, int64_t row,
                           int64_t width, int32_t *restrict below, int32_t *restrict nearest_row) {
    const int32_t r = (int32_t)row;
    for (int64_t c = 0; c < width; c++) {
        const int32_t down = mask_row[c] ? r : below[c];
        below[c] = down;
        const int32_t up = above_row[c];
        const int32_t up_dist = up < 0 ? INT32_MAX : r - up;
        const int32_t down_dist = down < 0 ? INT32_MAX : down - r;
        nearest_row[c] = down_dist < up_dist ? down : up;
    }
}

int64_t cx_edt_row(const int32_t *col_nearest_row, int64_t row, int64_t width, int64_t col_lo, int64_t col_hi,
                   int32_t *sites, int64_t *site_sq, int32_t *run_end) {
    /* Lower envelope: sites[0..top] are columns whose candidates may be nearest to some
     * pixel of the row. A middle candidate v between u and w is dropped when
     * c*|v|^2 - b*|u|^2 - a*|w|^2 - a*b*c > 0 (a = v - u, b = w - v, c = a + b, |.|^2 the
     * squared row offsets). SciPy evaluates this in float64; with sides <= 2^17 every
     * term is an integer below 2^53, so int64 arithmetic takes the same decisions. */
    int64_t top = -1;
    for (int64_t col = col_lo; col <= col_hi; col++) {
        if (col_nearest_row[col] < 0)
            continue;
        const int64_t w_off = col_nearest_row[col] - row, w_sq = w_off * w_off;
        while (top >= 1) {
            const int64_t v = sites[top], u = sites[top - 1];
            const int64_t a = v - u, b = col - v, c = a + b;
            if (c * site_sq[top] - b * site_sq[top - 1] - a * w_sq - a * b * c <= 0)
                break;
            top--;
        }
        top++;
        sites[top] = (int32_t)col;
        site_sq[top] = w_sq;
    }
    if (top < 0)
        return 0;
    /* SciPy's scan: x = 0..width-1, moving from candidate l to l + 1 while l + 1 is
     * strictly nearer (so the earlier one wins a tie). With f the row offset and s the
     * column, l + 1 is strictly nearer than l exactly when
     *     2x(s1 - s0) > f1^2 - f0^2 + s1^2 - s0^2,
     * i.e. from x = floor(num / den) + 1 on, den = 2(s1 - s0) > 0. So candidate l serves
     * [start, max(start, min(that x, width))), start being where the previous one ended.
     * The floor comes from a float64 quotient corrected with exact integer checks. */
    int64_t start = 0;
    for (int64_t k = 0; k < top; k++) {
        const int64_t s0 = sites[k], s1 = sites[k + 1];
        const int64_t num = site_sq[k + 1] - site_sq[k] + s1 * s1 - s0 * s0, den = 2 * (s1 - s0);
        int64_t q = (int64_t)((double)num / (double)den); /* within one of the floor */
        while (q * den > num)
            q--;
        while ((q + 1) * den <= num)
            q++;
        int64_t end = q + 1 < width ? q + 1 : width;
        end = end > start ? end : start;
        run_end[k] = (int32_t)end;
        start = end;
    }
    run_end[top] = (int32_t)width;
    return top + 1;
}

cx_status cx_metrics_edt(const uint8_t *mask, int64_t height, int64_t width, int32_t *nearest_row,
                         int32_t *nearest_col, double *dist) {
    if (height < 1 || width < 1 || height * width >= ((int64_t)1 << 31) || height > CX_METRIC_MAX_SIDE ||
        width > CX_METRIC_MAX_SIDE)
        return cx_fail(CX_EINVAL, "edt: mask shape %lldx%lld is empty or too large",
                       (long long)height, (long long)width);
    cx_metric_workspace ws;
    CX_TRY(cx_metric_workspace_get(height, width, 1, &ws));
    cx_edt_columns_down(mask, height, width, ws.col_nearest);
    for (int64_t c = 0; c < width; c++)
        ws.below[c] = -1;
    for (int64_t r = height - 1; r >= 0; r--) {
        int32_t *cn = ws.row_nearest;
        cx_edt_columns_up_row(mask + r * width, ws.col_nearest + r * width, r, width, ws.below, cn);
        const int64_t n_runs = cx_edt_row(cn, r, width, 0, width - 1, ws.sites, ws.site_sq, ws.run_end);
        if (n_runs == 0) {
            for (int64_t x = 0; x < width; x++) {
                nearest_row[r * width + x] = nearest_col[r * width + x] = -1;
                if (dist)
                    dist[r * width + x] = INFINITY;
            }
            continue;
        }
        int64_t x = 0;
        for (int64_t l = 0; l < n_runs; l++) {
            const int32_t nc = ws.sites[l], nr = cn[nc];
            for (; x < ws.run_end[l]; x++) {
                const int64_t i = r * width + x;
                nearest_row[i] = nr;
                nearest_col[i] = nc;
                if (dist) {
                    const double dr = (double)(nr - r), dc = (double)(nc - x);
                    dist[i] = sqrt(dr * dr + dc * dc);
                }
            }
        }
    }
    return CX_OK;
}

/* ---- the Gaussian on the foreground ------------------------------------------------
 * EA is needed only at foreground pixels. The rows are visited bottom-up (see the EDT);
 * as soon as a row's Et is known, its horizontal 7-tap pass over the foreground's
 * columns goes into a ring of 7 rows, and once rows q-3..q+3 are in the ring the
 * vertical pass gives EA on row q's foreground. Nothing image-sized is kept. */

/* The prepared prediction at pixel i (the bytes' table for uint8 input). */
static inline double pred_at(const cx_metric_prep *prep, int64_t i) {
    return prep->is_u8 ? prep->u8_value[prep->pred_u8[i]] : prep->pred[i];
}

/* One output of the horizontal pass near the image border (zero outside the image). */
static double gauss_at_border(const double *et_row, int64_t width, int64_t c) {
    double acc = 0.0;
    for (int k = 0; k < GAUSS_SIZE; k++) {
        const int64_t cc = c + k - GAUSS_RADIUS;
        acc += cc >= 0 && cc < width ? gauss_weights[k] * et_row[cc] : 0.0;
    }
    return acc;
}

/* Horizontal pass of one Et row for columns [c0, c1] into out[0 .. c1 - c0]: the border
 * columns one by one, the interior in a loop the compiler vectorises. */
static void gauss_row(const double *et_row, int64_t width, int64_t c0, int64_t c1, double *out) {
    const double g0 = gauss_weights[0], g1 = gauss_weights[1], g2 = gauss_weights[2], g3 = gauss_weights[3],
                 g4 = gauss_weights[4], g5 = gauss_weights[5], g6 = gauss_weights[6];
    const int64_t inner0 = c0 > GAUSS_RADIUS ? c0 : GAUSS_RADIUS;
    const int64_t inner1 = c1 < width - 1 - GAUSS_RADIUS ? c1 : width - 1 - GAUSS_RADIUS;
    int64_t c = c0;
    for (; c <= c1 && c < inner0; c++)
        out[c - c0] = gauss_at_border(et_row, width, c);
    const double *t = et_row - GAUSS_RADIUS;
    double *o = out - c0;
    for (; c <= inner1; c++)
        o[c] = g0 * t[c] + g1 * t[c + 1] + g2 * t[c + 2] + g3 * t[c + 3] + g4 * t[c + 4] + g5 * t[c + 5] +
               g6 * t[c + 6];
    for (; c <= c1; c++)
        out[c - c0] = gauss_at_border(et_row, width, c);
}

/* Sum over row q's foreground of min(E, EA), E = 1 - pred; ring[row % 7] holds the
 * horizontal pass of each row (columns from fg_col_min) for q-3..q+3 within the image. */
static double foreground_row_min_error(const cx_metric_prep *prep, int64_t q, const double *ring, int64_t ring_cols) {
    const int64_t h = prep->height, w = prep->width, c0 = prep->fg_col_min;
    const double *g = gauss_weights;
    const double *taps[GAUSS_SIZE];
    for (int k = 0; k < GAUSS_SIZE; k++) {
        const int64_t rr = q + k - GAUSS_RADIUS;
        taps[k] = rr >= 0 && rr < h ? ring + (rr % GAUSS_SIZE) * ring_cols : NULL;
    }
    double total = 0.0;
    for (int64_t c = c0; c <= prep->fg_col_max; c++) {
        const int64_t i = q * w + c;
        if (!prep->gt[i])
            continue;
        double ea = 0.0;
        for (int k = 0; k < GAUSS_SIZE; k++)
            ea += taps[k] ? g[k] * taps[k][c - c0] : 0.0;
        const double e = fabs(pred_at(prep, i) - 1.0);
        total += ea < e ? ea : e;
    }
    return total;
}

double cx_wfmeasure(const cx_metric_prep *prep, const cx_metric_workspace *ws) {
    if (prep->n_fg == 0)
        return 0.0;
    pthread_once(&tables_once, init_tables);
    const int64_t h = prep->height, w = prep->width;
    const uint8_t *gt = prep->gt;
    const int64_t gauss_row0 = prep->fg_row_min - GAUSS_RADIUS, gauss_row1 = prep->fg_row_max + GAUSS_RADIUS;
    const int64_t ring_cols = prep->fg_col_max - prep->fg_col_min + 1;
    double *terms = ws->row_terms, *et_row = ws->row_et, *pred_row = ws->row_pred, *ring = ws->gauss_ring;

    /* Rows bottom-up: the column pass's upward sweep, the row pass of the EDT, Et and
     * the background's weighted errors p * B (E = p there), run by run (every pixel of a
     * run has the same nearest foreground pixel; the row's terms are summed in 8 lanes),
     * then the Gaussian. */
    cx_edt_columns_down(gt, h, w, ws->col_nearest);
    for (int64_t c = 0; c < w; c++)
        ws->below[c] = -1;
    double background_total = 0.0, foreground_total = 0.0;
    for (int64_t r = h - 1; r >= 0; r--) {
        int32_t *cn = ws->row_nearest;
        cx_edt_columns_up_row(gt + r * w, ws->col_nearest + r * w, r, w, ws->below, cn);
        const int64_t n_runs = cx_edt_row(cn, r, w, prep->fg_col_min, prep->fg_col_max, ws->sites, ws->site_sq, ws->run_end);
        const uint8_t *gt_row = gt + r * w;
        if (prep->is_u8) { /* read the bytes, not the image-sized float64 copy */
            const uint8_t *src = prep->pred_u8 + r * w;
            for (int64_t x = 0; x < w; x++)
                pred_row[x] = prep->u8_value[src[x]];
        } else {
            memcpy(pred_row, prep->pred + r * w, (size_t)w * sizeof(double));
        }
        int64_t x = 0;
        for (int64_t l = 0; l < n_runs; l++) {
            const int64_t nc = ws->sites[l], nr = cn[nc], end = ws->run_end[l];
            const double nearest_error = fabs(pred_at(prep, nr * w + nc) - 1.0);
            const int64_t dr = nr > r ? nr - r : r - nr;
            if (dr >= IMPORTANCE_SPAN) { /* beyond the table on the whole run */
                for (; x < end; x++) {
                    const double p = pred_row[x];
                    const int fg = gt_row[x];
                    et_row[x] = fg ? fabs(p - 1.0) : nearest_error;
                    terms[x] = fg || p == 0.0 ? 0.0 : p * importance_far(dr * dr + (nc - x) * (nc - x));
                }
                continue;
            }
            const double *table_row = importance_table + dr * IMPORTANCE_SPAN;
            for (; x < end; x++) {
                const double p = pred_row[x];
                const int fg = gt_row[x];
                const int64_t dc = nc > x ? nc - x : x - nc;
                const double importance = dc < IMPORTANCE_SPAN ? table_row[dc] : importance_far(dr * dr + dc * dc);
                et_row[x] = fg ? fabs(p - 1.0) : nearest_error;
                terms[x] = fg ? 0.0 : p * importance;
            }
        }
        background_total += lane_sum(terms, w);
        if (r >= gauss_row0 && r <= gauss_row1)
            gauss_row(et_row, w, prep->fg_col_min, prep->fg_col_max, ring + (r % GAUSS_SIZE) * ring_cols);
        const int64_t q = r + GAUSS_RADIUS; /* rows q-3..q+3 are in the ring now */
        if (q >= prep->fg_row_min && q <= prep->fg_row_max)
            foreground_total += foreground_row_min_error(prep, q, ring, ring_cols);
    }
    /* The top rows, whose upper taps fall outside the image. */
    for (int64_t q = GAUSS_RADIUS - 1; q >= 0; q--)
        if (q >= prep->fg_row_min && q <= prep->fg_row_max)
            foreground_total += foreground_row_min_error(prep, q, ring, ring_cols);

    const double n_fg = (double)prep->n_fg;
    const double tp = n_fg - foreground_total;
    const double fp = background_total;
    const double recall = 1.0 - foreground_total / n_fg;
    const double precision = tp / (tp + fp + CX_METRIC_EPS);
    return 2.0 * recall * precision / (recall + precision + CX_METRIC_EPS);
}
