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
 * tie); pass 2 runs along each row over the lower envelope of the column candidates,
 * with SciPy's removal test and its tie rule (the leftmost of equally near candidates
 * in envelope order), evaluated in the same float64 arithmetic. The nearest pixel only
 * matters through Et, and reproducing SciPy's choice keeps Et identical.
 *
 * EA is needed only on the foreground, so the separable Gaussian runs over the
 * foreground's bounding box (rows widened by 3 for the vertical pass). */
#include "metrics_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>

#define GAUSS_RADIUS 3
#define GAUSS_SIZE 7
#define GAUSS_SIGMA 5.0
/* B = 2 - exp(ln(0.5) / 5 * d) = 2 - 2^(-d / 5) is tabulated by row and column offset
 * (|dr|, |dc| < IMPORTANCE_SPAN; a run of pixels with the same nearest foreground pixel
 * reads one table row in order). Beyond (d >= 363), 2^(-d / 5) < 2^-72 is far below
 * half an ulp of 2, so float64 gives exactly 2.0, as NumPy does. */
#define IMPORTANCE_SPAN 363

static double gauss_weights[GAUSS_SIZE]; /* 1-D factor of fspecial('gaussian', 7, 5) */
/* [|dr|][|dc|] 2 - exp(ln(0.5) / 5 * sqrt(dr^2 + dc^2)) */
static double importance_table[IMPORTANCE_SPAN * IMPORTANCE_SPAN];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void init_tables(void) {
    double total = 0.0;
    for (int i = 0; i < GAUSS_SIZE; i++) {
        const double t = (double)(i - GAUSS_RADIUS);
        gauss_weights[i] = exp(-(t * t) / (2.0 * GAUSS_SIGMA * GAUSS_SIGMA));
        total += gauss_weights[i];
    }
    for (int i = 0; i < GAUSS_SIZE; i++)
        gauss_weights[i] /= total;
    const double slope = log(0.5) / 5.0; /* PySODMetrics: np.log(0.5) / 5 * Dst */
    for (int dr = 0; dr < IMPORTANCE_SPAN; dr++)
        for (int dc = 0; dc < IMPORTANCE_SPAN; dc++)
            importance_table[dr * IMPORTANCE_SPAN + dc] = 2.0 - exp(slope * sqrt((double)(dr * dr + dc * dc)));
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

void cx_edt_columns(const uint8_t *mask, int64_t height, int64_t width, int32_t *col_nearest,
                    int32_t *below) {
    /* Downwards: the last foreground row at or above r (-1: none yet). */
    for (int64_t c = 0; c < width; c++)
        col_nearest[c] = mask[c] ? 0 : -1;
    for (int64_t r = 1; r < height; r++) {
        const uint8_t *m = mask + r * width;
        const int32_t *prev = col_nearest + (r - 1) * width;
        int32_t *cur = col_nearest + r * width;
        const int32_t row = (int32_t)r;
        for (int64_t c = 0; c < width; c++)
            cur[c] = m[c] ? row : prev[c];
    }
    /* Upwards: the first foreground row at or below r; it wins only when strictly nearer
     * (distances to a missing row count as INT32_MAX). */
    for (int64_t c = 0; c < width; c++)
        below[c] = -1;
    for (int64_t r = height - 1; r >= 0; r--) {
        const uint8_t *m = mask + r * width;
        int32_t *cur = col_nearest + r * width;
        const int32_t row = (int32_t)r;
        for (int64_t c = 0; c < width; c++) {
            const int32_t down = m[c] ? row : below[c];
            below[c] = down;
            const int32_t up = cur[c];
            const int32_t up_dist = up < 0 ? INT32_MAX : row - up;
            const int32_t down_dist = down < 0 ? INT32_MAX : down - row;
            cur[c] = down_dist < up_dist ? down : up;
        }
    }
}

int64_t cx_edt_row(const int32_t *col_nearest_row, int64_t row, int64_t width, int32_t *sites,
                   int64_t *site_sq, int32_t *run_end) {
    /* Lower envelope: sites[0..top] are columns whose candidates may be nearest to some
     * pixel of the row. A middle candidate v between u and w is dropped when
     * c*|v|^2 - b*|u|^2 - a*|w|^2 - a*b*c > 0 (a = v - u, b = w - v, c = a + b, |.|^2 the
     * squared row offsets). SciPy evaluates this in float64; with sides <= 2^17 every
     * term is an integer below 2^53, so int64 arithmetic takes the same decisions. */
    int64_t top = -1;
    for (int64_t col = 0; col < width; col++) {
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
    cx_edt_columns(mask, height, width, ws.col_nearest, ws.below);
    for (int64_t r = 0; r < height; r++) {
        const int32_t *cn = ws.col_nearest + r * width;
        const int64_t n_runs = cx_edt_row(cn, r, width, ws.sites, ws.site_sq, ws.run_end);
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

/* ---- the Gaussian on the foreground ------------------------------------------------ */

/* Horizontal 7-tap pass of Et into out for rows [r0, r1], columns [c0, c1] (zero outside
 * the image). */
static void gauss_rows(const double *et, int64_t width, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                       double *out) {
    const double *g = gauss_weights;
    for (int64_t r = r0; r <= r1; r++) {
        const double *src = et + r * width;
        double *dst = out + r * width;
        int64_t c = c0;
        for (; c <= c1 && c < GAUSS_RADIUS; c++) {
            double acc = 0.0;
            for (int k = 0; k < GAUSS_SIZE; k++) {
                const int64_t cc = c + k - GAUSS_RADIUS;
                acc += cc >= 0 && cc < width ? g[k] * src[cc] : 0.0;
            }
            dst[c] = acc;
        }
        const int64_t interior_end = c1 < width - GAUSS_RADIUS - 1 ? c1 : width - GAUSS_RADIUS - 1;
        for (; c <= interior_end; c++) {
            const double *s = src + c - GAUSS_RADIUS;
            dst[c] = g[0] * s[0] + g[1] * s[1] + g[2] * s[2] + g[3] * s[3] + g[4] * s[4] + g[5] * s[5] +
                     g[6] * s[6];
        }
        for (; c <= c1; c++) {
            double acc = 0.0;
            for (int k = 0; k < GAUSS_SIZE; k++) {
                const int64_t cc = c + k - GAUSS_RADIUS;
                acc += cc >= 0 && cc < width ? g[k] * src[cc] : 0.0;
            }
            dst[c] = acc;
        }
    }
}

/* Sum over the foreground of min(E, EA), E = 1 - pred there. */
static double foreground_min_error(const cx_metric_prep *prep, const double *rows_pass) {
    const int64_t h = prep->height, w = prep->width;
    const double *g = gauss_weights;
    double total = 0.0;
    for (int64_t r = prep->fg_row_min; r <= prep->fg_row_max; r++) {
        double row_total = 0.0;
        for (int64_t c = prep->fg_col_min; c <= prep->fg_col_max; c++) {
            const int64_t i = r * w + c;
            if (!prep->gt[i])
                continue;
            double ea = 0.0;
            for (int k = 0; k < GAUSS_SIZE; k++) {
                const int64_t rr = r + k - GAUSS_RADIUS;
                ea += rr >= 0 && rr < h ? g[k] * rows_pass[rr * w + c] : 0.0;
            }
            const double e = fabs(prep->pred[i] - 1.0);
            row_total += ea < e ? ea : e;
        }
        total += row_total;
    }
    return total;
}

double cx_wfmeasure(const cx_metric_prep *prep, const cx_metric_workspace *ws) {
    if (prep->n_fg == 0)
        return 0.0;
    pthread_once(&tables_once, init_tables);
    const int64_t h = prep->height, w = prep->width;
    const double *pred = prep->pred;
    const uint8_t *gt = prep->gt;
    double *et = ws->error_t;

    /* EDT, Et, and the background's weighted errors p * B (E = p there), run by run:
     * every pixel of a run has the same nearest foreground pixel. The per-pixel terms go
     * to a row buffer that is summed in 8 lanes. */
    cx_edt_columns(gt, h, w, ws->col_nearest, ws->below);
    double background_total = 0.0;
    double *terms = ws->row_terms;
    for (int64_t r = 0; r < h; r++) {
        const int32_t *cn = ws->col_nearest + r * w;
        const int64_t n_runs = cx_edt_row(cn, r, w, ws->sites, ws->site_sq, ws->run_end);
        const double *pred_row = pred + r * w;
        const uint8_t *gt_row = gt + r * w;
        double *et_row = et + r * w;
        int64_t x = 0;
        for (int64_t l = 0; l < n_runs; l++) {
            const int64_t nc = ws->sites[l], nr = cn[nc], end = ws->run_end[l];
            const double nearest_error = fabs(pred[nr * w + nc] - 1.0);
            const int64_t dr = nr > r ? nr - r : r - nr;
            if (dr >= IMPORTANCE_SPAN) { /* B = 2 everywhere on this run */
                for (; x < end; x++) {
                    const double p = pred_row[x];
                    const int fg = gt_row[x];
                    et_row[x] = fg ? fabs(p - 1.0) : nearest_error;
                    terms[x] = fg ? 0.0 : p * 2.0;
                }
                continue;
            }
            const double *table_row = importance_table + dr * IMPORTANCE_SPAN;
            for (; x < end; x++) {
                const double p = pred_row[x];
                const int fg = gt_row[x];
                const int64_t dc = nc > x ? nc - x : x - nc;
                const double importance = dc < IMPORTANCE_SPAN ? table_row[dc] : 2.0;
                et_row[x] = fg ? fabs(p - 1.0) : nearest_error;
                terms[x] = fg ? 0.0 : p * importance;
            }
        }
        background_total += lane_sum(terms, w);
    }

    /* EA on the foreground: horizontal pass over the box rows +-3, vertical at the pixels. */
    const int64_t r0 = prep->fg_row_min - GAUSS_RADIUS > 0 ? prep->fg_row_min - GAUSS_RADIUS : 0;
    const int64_t r1 = prep->fg_row_max + GAUSS_RADIUS < h - 1 ? prep->fg_row_max + GAUSS_RADIUS : h - 1;
    gauss_rows(et, w, r0, r1, prep->fg_col_min, prep->fg_col_max, ws->conv_rows);
    const double foreground_total = foreground_min_error(prep, ws->conv_rows);

    const double n_fg = (double)prep->n_fg;
    const double tp = n_fg - foreground_total;
    const double fp = background_total;
    const double recall = 1.0 - foreground_total / n_fg;
    const double precision = tp / (tp + fp + CX_METRIC_EPS);
    return 2.0 * recall * precision / (recall + precision + CX_METRIC_EPS);
}
