/* Normalisation ops of the CPU backend (shapes and conventions in ops.h):
 *   layernorm    over the last dim of x [rows, cols] (channels-last tokens)
 *   layernorm2d  over the channels of x [batch, channels, hw] at each pixel (NCHW)
 *   l2norm       y = x / max(||x||, eps) over the last dim of x [rows, cols]
 *
 * Statistics are computed in double, mean first and then the centred sum of squares
 * (two passes: no cancellation when |mean| >> std). saved holds float means and 1/std.
 *
 * Determinism: every output row/pixel is computed inside one task in a fixed order.
 * dweight and dbias are sums over all rows (pixels): each fixed-size block of rows
 * (pixel tiles), whose size follows from the shape alone, writes double partial sums to
 * a scratch buffer, and the partials are added in block order afterwards. */
#include "cpu_ops.h"

#include <math.h>
#include <string.h>


/* Target elements per parallel task. */
#define TASK_ELEMENTS 8192
/* At most this many row blocks for the dweight/dbias partials. */
#define MAX_REDUCE_BLOCKS 256
/* Scratch slot holding partial sums across tasks (allocated by the calling thread). */
#define SLOT_PARTIALS 3

/* Sums in double with 8 interleaved accumulators: a fixed order (independent of
 * threads and of the vector width) that gcc -O3 keeps in vector registers. One sum per
 * loop: gcc does not vectorise loops that carry two such accumulator arrays. */
static inline double combine8(const double acc[8]) {
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* The sums below, one loop shape each: terms term(i) summed as acc[i mod 8]. */
#define SUM8(n, term)                                 \
    do {                                              \
        int i_ = 0;                                   \
        for (; i_ + 8 <= (n); i_ += 8)                \
            for (int j_ = 0; j_ < 8; j_++) {          \
                int i = i_ + j_;                      \
                acc[j_] += (term);                    \
            }                                         \
        for (int i = i_; i < (n); i++)                \
            acc[i & 7] += (term);                     \
    } while (0)

/* sum a */
static inline double sum_f64(const float *a, int n) {
    double acc[8] = {0};
    SUM8(n, (double)a[i]);
    return combine8(acc);
}

/* sum a b */
static inline double dot_f64(const float *a, const float *b, int n) {
    double acc[8] = {0};
    SUM8(n, (double)a[i] * b[i]);
    return combine8(acc);
}

/* sum a (x - mean) */
static inline double centred_dot(const float *a, const float *x, double mean, int n) {
    double acc[8] = {0};
    SUM8(n, a[i] * (x[i] - mean));
    return combine8(acc);
}

/* sum a w (x - mean) */
static inline double weighted_centred_dot(const float *a, const float *w, const float *x,
                                          double mean, int n) {
    double acc[8] = {0};
    SUM8(n, (double)a[i] * w[i] * (x[i] - mean));
    return combine8(acc);
}

/* sum (x - mean)^2 */
static inline double centred_sum_sq(const float *x, int n, double mean) {
    double acc[8] = {0};
    SUM8(n, (x[i] - mean) * (x[i] - mean));
    return combine8(acc);
}

/* sum over pixels of dy xhat, xhat = (x - mean[p]) rstd[p] */
static inline double sum_dy_xhat(const float *dy, const float *x, const double *mean,
                                 const double *rstd, int n) {
    double acc[8] = {0};
    SUM8(n, dy[i] * ((x[i] - mean[i]) * rstd[i]));
    return combine8(acc);
}

/* Rows per reduction block: at least 32, and at most MAX_REDUCE_BLOCKS blocks. */
static int64_t reduce_block_rows(int64_t rows) {
    int64_t block = (rows + MAX_REDUCE_BLOCKS - 1) / MAX_REDUCE_BLOCKS;
    return block < 32 ? 32 : block;
}

/* dst[c] += (float) sum_k partials[k * stride + c] for k < n_blocks, in block order.
 * Adds into block 0's row in place. */
static void add_partials(double *partials, int64_t n_blocks, int64_t stride, int n, float *dst) {
    for (int64_t k = 1; k < n_blocks; k++) {
        const double *row = partials + k * stride;
        for (int c = 0; c < n; c++)
            partials[c] += row[c];
    }
    for (int c = 0; c < n; c++)
        dst[c] += (float)partials[c];
}

/* ---- LayerNorm over the last dim ---------------------------------------------------
 * x, y [rows, cols]; weight, bias [cols] (NULL: 1 and 0); saved [2*rows]:
 * saved[r] = mean, saved[rows + r] = 1/sqrt(var + eps) (biased variance). */
typedef struct {
    int64_t rows;
    int cols;
    float eps;
    const float *x, *weight, *bias, *saved, *dy;
    float *y, *saved_out, *dx;
    double *partials;    /* [n_blocks, 2*cols]: dweight then dbias sums, or NULL */
    int64_t block_rows;
} layernorm_args;

/* One row. Always inlined: in the call where weight and bias are known non-NULL the
 * compiler drops the NULL tests from the loop and vectorises it. */
static inline __attribute__((always_inline)) void layernorm_forward_row(
    int cols, float eps, const float *x, const float *weight, const float *bias, float *y,
    float *mean_out, float *rstd_out) {
    double mean = sum_f64(x, cols) / cols;
    double var = centred_sum_sq(x, cols, mean) / cols;
    double rstd = 1.0 / sqrt(var + (double)eps);
    for (int c = 0; c < cols; c++) {
        float xhat = (float)((x[c] - mean) * rstd);
        y[c] = (weight ? xhat * weight[c] : xhat) + (bias ? bias[c] : 0.0f);
    }
    *mean_out = (float)mean;
    *rstd_out = (float)rstd;
}

VECTOR_CLONES static void layernorm_forward_range(void *ctx, int64_t begin, int64_t end) {
    const layernorm_args *a = ctx;
    const int cols = a->cols;
    for (int64_t r = begin; r < end; r++) {
        const float *x = a->x + r * cols;
        float *y = a->y + r * cols;
        float *mean = a->saved_out + r, *rstd = a->saved_out + a->rows + r;
        if (a->weight && a->bias) /* the model's case, specialised */
            layernorm_forward_row(cols, a->eps, x, a->weight, a->bias, y, mean, rstd);
        else
            layernorm_forward_row(cols, a->eps, x, a->weight, a->bias, y, mean, rstd);
    }
}

void cpu_layernorm_forward(cx_backend *be, int rows, int cols, float eps, const float *x,
                           const float *weight, const float *bias, float *y, float *saved) {
    if (rows <= 0 || cols <= 0)
        return;
    layernorm_args a = {.rows = rows, .cols = cols, .eps = eps, .x = x, .weight = weight,
                        .bias = bias, .y = y, .saved_out = saved};
    cx_parallel_for(rows, TASK_ELEMENTS / cols + 1, layernorm_forward_range, &a);
}

static inline __attribute__((always_inline)) void layernorm_backward_row(
    int cols, const float *x, const float *weight, double mean, double rstd, const float *dy,
    float *dx) {
    double mean_g = (weight ? dot_f64(dy, weight, cols) : sum_f64(dy, cols)) / cols;
    double mean_gx = (weight ? weighted_centred_dot(dy, weight, x, mean, cols)
                             : centred_dot(dy, x, mean, cols)) * rstd / cols;
    for (int c = 0; c < cols; c++) {
        double g = weight ? (double)dy[c] * weight[c] : (double)dy[c];
        double xhat = (x[c] - mean) * rstd;
        dx[c] += (float)(rstd * (g - mean_g - xhat * mean_gx));
    }
}

/* With xhat = (x - mean) rstd and g = dy * weight:
 *   dx += rstd (g - mean(g) - xhat mean(g xhat)),  dweight += sum dy xhat,  dbias += sum dy.
 * One task per block of rows; the block's dweight/dbias sums go to its partials row. */
VECTOR_CLONES static void layernorm_backward_blocks(void *ctx, int64_t block_begin,
                                                    int64_t block_end) {
    const layernorm_args *a = ctx;
    const int cols = a->cols;
    const float *weight = a->weight;
    for (int64_t k = block_begin; k < block_end; k++) {
        int64_t r0 = k * a->block_rows;
        int64_t r1 = r0 + a->block_rows < a->rows ? r0 + a->block_rows : a->rows;
        double *pw = a->partials ? a->partials + k * 2 * cols : NULL;
        double *pb = pw ? pw + cols : NULL;
        if (pw)
            memset(pw, 0, 2 * (size_t)cols * sizeof *pw);
        for (int64_t r = r0; r < r1; r++) {
            const float *x = a->x + r * cols;
            const float *dy = a->dy + r * cols;
            const double mean = a->saved[r], rstd = a->saved[a->rows + r];
            if (a->dx) {
                float *dx = a->dx + r * cols;
                if (weight)
                    layernorm_backward_row(cols, x, weight, mean, rstd, dy, dx);
                else
                    layernorm_backward_row(cols, x, NULL, mean, rstd, dy, dx);
            }
            if (pw)
                for (int c = 0; c < cols; c++) {
                    double xhat = (x[c] - mean) * rstd;
                    pw[c] += dy[c] * xhat;
                    pb[c] += dy[c];
                }
        }
    }
}

/* Without scratch memory: dweight/dbias column by column, with exactly the arithmetic
 * of the blocked path (same block partials, same order), so results are identical. */
static void layernorm_param_grads_serial(const layernorm_args *a, float *dweight, float *dbias) {
    const int cols = a->cols;
    int64_t n_blocks = (a->rows + a->block_rows - 1) / a->block_rows;
    for (int c = 0; c < cols; c++) {
        double total_w = 0.0, total_b = 0.0;
        for (int64_t k = 0; k < n_blocks; k++) {
            int64_t r0 = k * a->block_rows;
            int64_t r1 = r0 + a->block_rows < a->rows ? r0 + a->block_rows : a->rows;
            double pw = 0.0, pb = 0.0;
            for (int64_t r = r0; r < r1; r++) {
                double mean = a->saved[r], rstd = a->saved[a->rows + r];
                double xhat = (a->x[r * cols + c] - mean) * rstd;
                pw += a->dy[r * cols + c] * xhat;
                pb += a->dy[r * cols + c];
            }
            total_w = k == 0 ? pw : total_w + pw;
            total_b = k == 0 ? pb : total_b + pb;
        }
        if (dweight)
            dweight[c] += (float)total_w;
        if (dbias)
            dbias[c] += (float)total_b;
    }
}

void cpu_layernorm_backward(cx_backend *be, int rows, int cols, const float *x,
                            const float *weight, const float *saved, const float *dy,
                            float *dx, float *dweight, float *dbias) {
    if (rows <= 0 || cols <= 0 || (!dx && !dweight && !dbias))
        return;
    int64_t block_rows = reduce_block_rows(rows);
    int64_t n_blocks = (rows + block_rows - 1) / block_rows;
    double *partials = NULL;
    if (dweight || dbias)
        partials = (double *)cx_scratch(SLOT_PARTIALS, (size_t)n_blocks * 2 * cols * 2);
    layernorm_args a = {.rows = rows, .cols = cols, .x = x, .weight = weight, .saved = saved,
                        .dy = dy, .dx = dx, .partials = partials, .block_rows = block_rows};
    int64_t block_grain = TASK_ELEMENTS / (block_rows * cols) + 1;
    if (dx || partials)
        cx_parallel_for(n_blocks, block_grain, layernorm_backward_blocks, &a);
    if (partials) {
        if (dweight)
            add_partials(partials, n_blocks, 2 * (int64_t)cols, cols, dweight);
        if (dbias)
            add_partials(partials + cols, n_blocks, 2 * (int64_t)cols, cols, dbias);
    } else if (dweight || dbias) {
        layernorm_param_grads_serial(&a, dweight, dbias);
    }
}

/* ---- LayerNorm2d: over channels at each pixel of NCHW -------------------------------
 * x, y [batch, channels, hw]; weight, bias [channels] (NULL: 1 and 0);
 * saved [2*batch*hw]: saved[b*hw + p] = mean, saved[batch*hw + b*hw + p] = 1/std.
 * Work is split into tiles of `tile` pixels of one image; inside a tile the loops run
 * over channels outside and pixels inside, so memory is read in contiguous runs and
 * the per-pixel sums vectorise. */
#define MAX_TILE 256

typedef struct {
    int batch, channels, hw, tile, n_tiles;
    float eps;
    const float *x, *weight, *bias, *saved, *dy;
    float *y, *saved_out, *dx;
    double *partials; /* [batch*n_tiles, 2*channels]: dweight then dbias sums, or NULL */
} layernorm2d_args;

/* Pixels per tile: the tile's channels x pixels block (read 2-3 times) stays near
 * 128 KiB; a multiple of 16 unless the image is smaller. */
static int layernorm2d_tile(int channels, int hw) {
    int tile = 32768 / (channels > 0 ? channels : 1);
    tile = tile / 16 * 16;
    tile = tile < 16 ? 16 : tile > MAX_TILE ? MAX_TILE : tile;
    return tile < hw ? tile : hw;
}

VECTOR_CLONES static void layernorm2d_forward_tiles(void *ctx, int64_t begin, int64_t end) {
    const layernorm2d_args *a = ctx;
    const int channels = a->channels, hw = a->hw;
    double mean[MAX_TILE], acc[MAX_TILE];
    for (int64_t task = begin; task < end; task++) {
        int b = (int)(task / a->n_tiles);
        int p0 = (int)(task % a->n_tiles) * a->tile;
        int np = p0 + a->tile < hw ? a->tile : hw - p0;
        const float *x = a->x + (size_t)b * channels * hw + p0;
        float *y = a->y + (size_t)b * channels * hw + p0;
        for (int p = 0; p < np; p++)
            acc[p] = 0.0;
        for (int c = 0; c < channels; c++)
            for (int p = 0; p < np; p++)
                acc[p] += x[(size_t)c * hw + p];
        for (int p = 0; p < np; p++) {
            mean[p] = acc[p] / channels;
            acc[p] = 0.0;
        }
        for (int c = 0; c < channels; c++)
            for (int p = 0; p < np; p++) {
                double d = x[(size_t)c * hw + p] - mean[p];
                acc[p] += d * d;
            }
        double *rstd = acc; /* reused in place */
        for (int p = 0; p < np; p++)
            rstd[p] = 1.0 / sqrt(acc[p] / channels + (double)a->eps);
        for (int c = 0; c < channels; c++) {
            float w = a->weight ? a->weight[c] : 1.0f;
            float bias = a->bias ? a->bias[c] : 0.0f;
            const float *xc = x + (size_t)c * hw;
            float *yc = y + (size_t)c * hw;
            for (int p = 0; p < np; p++)
                yc[p] = (float)((xc[p] - mean[p]) * rstd[p]) * w + bias;
        }
        float *saved_mean = a->saved_out + (size_t)b * hw + p0;
        float *saved_rstd = saved_mean + (size_t)a->batch * hw;
        for (int p = 0; p < np; p++) {
            saved_mean[p] = (float)mean[p];
            saved_rstd[p] = (float)rstd[p];
        }
    }
}

void cpu_layernorm2d_forward(cx_backend *be, int batch, int channels, int hw, float eps,
                             const float *x, const float *weight, const float *bias, float *y,
                             float *saved) {
    if (batch <= 0 || channels <= 0 || hw <= 0)
        return;
    int tile = layernorm2d_tile(channels, hw);
    layernorm2d_args a = {.batch = batch, .channels = channels, .hw = hw, .tile = tile,
                          .n_tiles = (hw + tile - 1) / tile, .eps = eps, .x = x,
                          .weight = weight, .bias = bias, .y = y, .saved_out = saved};
    int64_t n_tasks = (int64_t)batch * a.n_tiles;
    cx_parallel_for(n_tasks, TASK_ELEMENTS / ((int64_t)tile * channels) + 1,
                    layernorm2d_forward_tiles, &a);
}

/* Per pixel, as layernorm over the channels; the tile's dweight/dbias sums (over its
 * pixels, in 4 interleaved accumulators) go to its partials row. */
VECTOR_CLONES static void layernorm2d_backward_tiles(void *ctx, int64_t begin, int64_t end) {
    const layernorm2d_args *a = ctx;
    const int channels = a->channels, hw = a->hw;
    const float *weight = a->weight;
    double mean[MAX_TILE], rstd[MAX_TILE], mean_g[MAX_TILE], mean_gx[MAX_TILE];
    for (int64_t task = begin; task < end; task++) {
        int b = (int)(task / a->n_tiles);
        int p0 = (int)(task % a->n_tiles) * a->tile;
        int np = p0 + a->tile < hw ? a->tile : hw - p0;
        size_t offset = (size_t)b * channels * hw + p0;
        const float *x = a->x + offset, *dy = a->dy + offset;
        const float *saved_mean = a->saved + (size_t)b * hw + p0;
        const float *saved_rstd = saved_mean + (size_t)a->batch * hw;
        for (int p = 0; p < np; p++) {
            mean[p] = saved_mean[p];
            rstd[p] = saved_rstd[p];
        }
        if (a->dx) {
            for (int p = 0; p < np; p++)
                mean_g[p] = mean_gx[p] = 0.0;
            for (int c = 0; c < channels; c++) {
                double w = weight ? weight[c] : 1.0;
                const float *xc = x + (size_t)c * hw, *dyc = dy + (size_t)c * hw;
                for (int p = 0; p < np; p++) {
                    double g = dyc[p] * w;
                    double xhat = (xc[p] - mean[p]) * rstd[p];
                    mean_g[p] += g;
                    mean_gx[p] += g * xhat;
                }
            }
            for (int p = 0; p < np; p++) {
                mean_g[p] /= channels;
                mean_gx[p] /= channels;
            }
            float *dx = a->dx + offset;
            for (int c = 0; c < channels; c++) {
                double w = weight ? weight[c] : 1.0;
                const float *xc = x + (size_t)c * hw, *dyc = dy + (size_t)c * hw;
                float *dxc = dx + (size_t)c * hw;
                for (int p = 0; p < np; p++) {
                    double g = dyc[p] * w;
                    double xhat = (xc[p] - mean[p]) * rstd[p];
                    dxc[p] += (float)(rstd[p] * (g - mean_g[p] - xhat * mean_gx[p]));
                }
            }
        }
        if (a->partials) {
            double *pw = a->partials + task * 2 * channels;
            double *pb = pw + channels;
            for (int c = 0; c < channels; c++) {
                const float *xc = x + (size_t)c * hw, *dyc = dy + (size_t)c * hw;
                pw[c] = sum_dy_xhat(dyc, xc, mean, rstd, np);
                pb[c] = sum_f64(dyc, np);
            }
        }
    }
}

/* Without scratch memory: dweight/dbias with the arithmetic of the tiled path. */
static void layernorm2d_param_grads_serial(const layernorm2d_args *a, float *dweight,
                                           float *dbias) {
    const int channels = a->channels, hw = a->hw;
    int64_t n_tasks = (int64_t)a->batch * a->n_tiles;
    for (int c = 0; c < channels; c++) {
        double total_w = 0.0, total_b = 0.0;
        for (int64_t task = 0; task < n_tasks; task++) {
            int b = (int)(task / a->n_tiles);
            int p0 = (int)(task % a->n_tiles) * a->tile;
            int np = p0 + a->tile < hw ? a->tile : hw - p0;
            size_t offset = ((size_t)b * channels + c) * hw + p0;
            const float *xc = a->x + offset, *dyc = a->dy + offset;
            const float *saved_mean = a->saved + (size_t)b * hw + p0;
            const float *saved_rstd = saved_mean + (size_t)a->batch * hw;
            double mean[MAX_TILE], rstd[MAX_TILE];
            for (int p = 0; p < np; p++) {
                mean[p] = saved_mean[p];
                rstd[p] = saved_rstd[p];
            }
            double pw = sum_dy_xhat(dyc, xc, mean, rstd, np);
            double pb = sum_f64(dyc, np);
            total_w = task == 0 ? pw : total_w + pw;
            total_b = task == 0 ? pb : total_b + pb;
        }
        if (dweight)
            dweight[c] += (float)total_w;
        if (dbias)
            dbias[c] += (float)total_b;
    }
}

void cpu_layernorm2d_backward(cx_backend *be, int batch, int channels, int hw,
                              const float *x, const float *weight, const float *saved,
                              const float *dy, float *dx, float *dweight, float *dbias) {
    if (batch <= 0 || channels <= 0 || hw <= 0 || (!dx && !dweight && !dbias))
        return;
    int tile = layernorm2d_tile(channels, hw);
    layernorm2d_args a = {.batch = batch, .channels = channels, .hw = hw, .tile = tile,
                          .n_tiles = (hw + tile - 1) / tile, .x = x, .weight = weight,
                          .saved = saved, .dy = dy, .dx = dx};
    int64_t n_tasks = (int64_t)batch * a.n_tiles;
    if (dweight || dbias)
        a.partials = (double *)cx_scratch(SLOT_PARTIALS, (size_t)n_tasks * 2 * channels * 2);
    if (dx || a.partials)
        cx_parallel_for(n_tasks, TASK_ELEMENTS / ((int64_t)tile * channels) + 1,
                        layernorm2d_backward_tiles, &a);
    if (a.partials) {
        if (dweight)
            add_partials(a.partials, n_tasks, 2 * (int64_t)channels, channels, dweight);
        if (dbias)
            add_partials(a.partials + channels, n_tasks, 2 * (int64_t)channels, channels, dbias);
    } else if (dweight || dbias) {
        layernorm2d_param_grads_serial(&a, dweight, dbias);
    }
}

/* ---- L2 normalisation over the last dim --------------------------------------------
 * x, y [rows, cols]; saved [rows] = ||x|| (before the max with eps).
 * Backward, n = ||x||: where n >= eps, dx += (dy - x <x, dy>/n^2)/n; below eps the op
 * is x/eps and dx += dy/eps (PyTorch's clamp_min passes the gradient where n >= eps). */
typedef struct {
    int cols;
    float eps;
    const float *x, *saved, *dy;
    float *y, *saved_out, *dx;
} l2norm_args;

VECTOR_CLONES static void l2norm_forward_range(void *ctx, int64_t begin, int64_t end) {
    const l2norm_args *a = ctx;
    const int cols = a->cols;
    for (int64_t r = begin; r < end; r++) {
        const float *x = a->x + r * cols;
        float *y = a->y + r * cols;
        double norm = sqrt(centred_sum_sq(x, cols, 0.0));
        double inv = 1.0 / (norm > a->eps ? norm : (double)a->eps);
        for (int c = 0; c < cols; c++)
            y[c] = (float)(x[c] * inv);
        a->saved_out[r] = (float)norm;
    }
}

void cpu_l2norm_forward(cx_backend *be, int rows, int cols, float eps, const float *x,
                        float *y, float *saved) {
    if (rows <= 0 || cols <= 0)
        return;
    l2norm_args a = {.cols = cols, .eps = eps, .x = x, .y = y, .saved_out = saved};
    cx_parallel_for(rows, TASK_ELEMENTS / cols + 1, l2norm_forward_range, &a);
}

VECTOR_CLONES static void l2norm_backward_range(void *ctx, int64_t begin, int64_t end) {
    const l2norm_args *a = ctx;
    const int cols = a->cols;
    for (int64_t r = begin; r < end; r++) {
        const float *x = a->x + r * cols;
        const float *dy = a->dy + r * cols;
        float *dx = a->dx + r * cols;
        float norm = a->saved[r];
        if (norm >= a->eps) {
            double inv = 1.0 / norm;
            double proj = dot_f64(x, dy, cols) * inv * inv;
            for (int c = 0; c < cols; c++)
                dx[c] += (float)((dy[c] - x[c] * proj) * inv);
        } else {
            double inv = 1.0 / a->eps;
            for (int c = 0; c < cols; c++)
                dx[c] += (float)(dy[c] * inv);
        }
    }
}

void cpu_l2norm_backward(cx_backend *be, int rows, int cols, float eps, const float *x,
                         const float *saved, const float *dy, float *dx) {
    if (!dx || rows <= 0 || cols <= 0)
        return;
    l2norm_args a = {.cols = cols, .eps = eps, .x = x, .saved = saved, .dy = dy, .dx = dx};
    cx_parallel_for(rows, TASK_ELEMENTS / cols + 1, l2norm_backward_range, &a);
}
