/* Broadcast products and layout ops of the CPU backend (shapes in ops.h):
 *   scale_mid          y[o,m,i] = x[o,m,i] * s[m]        x, y [outer, mid, inner], s [mid]
 *   scale_outer_inner  y[o,m,i] = x[o,m,i] * s[o,i]      s [outer, inner]
 *   transpose          x [batch, a, b] -> y [batch, b, a] (and its accumulating twin)
 *   copy_channels      channel-block copy / accumulate between NCHW tensors
 *
 * Determinism: ds of scale_mid sums over outer and inner. Blocks of outer rows (size
 * fixed by the shape) write double partial sums, which are added in block order; the
 * per-(o, m) inner sums use 8 interleaved accumulators. ds of scale_outer_inner sums
 * over mid inside one task per (o, pixel block). Everything else is elementwise. */
#include "cpu_ops.h"

#include <string.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif


#define GRAIN_ELEMENTS (1 << 15)
#define MAX_REDUCE_BLOCKS 256
#define SLOT_PARTIALS 3

/* ---- scale_mid ------------------------------------------------------------------- */
typedef struct {
    int outer, mid, inner;
    const float *x, *s, *dy;
    float *y, *dx;
    double *partials;      /* [n_outer_blocks, mid] or NULL */
    int outer_block;       /* outer rows per reduction block */
    int mid_block;         /* mid indices per task */
    int n_mid_blocks;
} scale_mid_args;

static void scale_mid_forward_rows(void *ctx, int64_t begin, int64_t end) {
    const scale_mid_args *a = ctx;
    const int mid = a->mid, inner = a->inner;
    const float *s = a->s;
    if (inner == 1) { /* rows are outer indices: y[o, :] = x[o, :] * s */
        for (int64_t o = begin; o < end; o++) {
            const float *x = a->x + o * mid;
            float *y = a->y + o * mid;
            for (int m = 0; m < mid; m++)
                y[m] = x[m] * s[m];
        }
        return;
    }
    for (int64_t row = begin; row < end; row++) { /* row = o * mid + m */
        const float scale = s[row % mid];
        const float *x = a->x + row * inner;
        float *y = a->y + row * inner;
        for (int i = 0; i < inner; i++)
            y[i] = x[i] * scale;
    }
}

void cpu_scale_mid_forward(cx_backend *be, int outer, int mid, int inner, const float *x,
                           const float *s, float *y) {
    if (outer <= 0 || mid <= 0 || inner <= 0)
        return;
    scale_mid_args a = {.outer = outer, .mid = mid, .inner = inner, .x = x, .s = s, .y = y};
    if (inner == 1)
        cx_parallel_for(outer, GRAIN_ELEMENTS / mid + 1, scale_mid_forward_rows, &a);
    else
        cx_parallel_for((int64_t)outer * mid, GRAIN_ELEMENTS / inner + 1,
                        scale_mid_forward_rows, &a);
}

/* sum_i dy[i] x[i] in double, 8 interleaved accumulators */
static inline double row_dot(const float *dy, const float *x, int n) {
    double acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += (double)dy[i + j] * x[i + j];
    for (; i < n; i++)
        acc[i & 7] += (double)dy[i] * x[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* Task = (outer block, mid block): dx for its elements, and partials[block][m] =
 * sum over the block's o (in order) of row_dot(dy[o,m,:], x[o,m,:]). */
VECTOR_CLONES static void scale_mid_backward_tasks(void *ctx, int64_t begin, int64_t end) {
    const scale_mid_args *a = ctx;
    const int mid = a->mid, inner = a->inner;
    for (int64_t task = begin; task < end; task++) {
        int64_t ob = task / a->n_mid_blocks;
        int m0 = (int)(task % a->n_mid_blocks) * a->mid_block;
        int m1 = m0 + a->mid_block < mid ? m0 + a->mid_block : mid;
        int64_t o0 = ob * a->outer_block;
        int64_t o1 = o0 + a->outer_block < a->outer ? o0 + a->outer_block : a->outer;
        double *partial = a->partials ? a->partials + ob * mid : NULL;
        if (partial)
            for (int m = m0; m < m1; m++)
                partial[m] = 0.0;
        for (int64_t o = o0; o < o1; o++) {
            size_t base = (size_t)o * mid * inner;
            if (inner == 1) {
                const float *x = a->x + base, *dy = a->dy + base, *s = a->s;
                float *dx = a->dx ? a->dx + base : NULL;
                if (dx)
                    for (int m = m0; m < m1; m++)
                        dx[m] += dy[m] * s[m];
                if (partial)
                    for (int m = m0; m < m1; m++)
                        partial[m] += (double)dy[m] * x[m];
                continue;
            }
            for (int m = m0; m < m1; m++) {
                size_t offset = base + (size_t)m * inner;
                const float *x = a->x + offset, *dy = a->dy + offset;
                if (a->dx) {
                    float *dx = a->dx + offset;
                    const float scale = a->s[m];
                    for (int i = 0; i < inner; i++)
                        dx[i] += dy[i] * scale;
                }
                if (partial)
                    partial[m] += row_dot(dy, x, inner);
            }
        }
    }
}

/* ds without scratch memory, with the arithmetic of the blocked path. */
static void scale_mid_ds_serial(const scale_mid_args *a, float *ds) {
    const int mid = a->mid, inner = a->inner;
    int64_t n_blocks = (a->outer + a->outer_block - 1) / a->outer_block;
    for (int m = 0; m < mid; m++) {
        double total = 0.0;
        for (int64_t ob = 0; ob < n_blocks; ob++) {
            int64_t o0 = ob * a->outer_block;
            int64_t o1 = o0 + a->outer_block < a->outer ? o0 + a->outer_block : a->outer;
            double partial = 0.0;
            for (int64_t o = o0; o < o1; o++) {
                size_t offset = ((size_t)o * mid + m) * inner;
                partial += inner == 1 ? (double)a->dy[offset] * a->x[offset]
                                      : row_dot(a->dy + offset, a->x + offset, inner);
            }
            total = ob == 0 ? partial : total + partial;
        }
        ds[m] += (float)total;
    }
}

void cpu_scale_mid_backward(cx_backend *be, int outer, int mid, int inner, const float *x,
                            const float *s, const float *dy, float *dx, float *ds) {
    if (outer <= 0 || mid <= 0 || inner <= 0 || (!dx && !ds))
        return;
    scale_mid_args a = {.outer = outer, .mid = mid, .inner = inner, .x = x, .s = s, .dy = dy,
                        .dx = dx};
    /* outer rows per reduction block: at most MAX_REDUCE_BLOCKS blocks, and about
     * GRAIN_ELEMENTS elements per block where the shape allows */
    int64_t outer_block = (outer + MAX_REDUCE_BLOCKS - 1) / MAX_REDUCE_BLOCKS;
    int64_t min_rows = GRAIN_ELEMENTS / ((int64_t)mid * inner) + 1;
    if (outer_block < min_rows)
        outer_block = min_rows < outer ? min_rows : outer;
    a.outer_block = (int)outer_block;
    /* split mid when one outer block is a lot of work (per-sample scales: outer = 1) */
    int64_t mid_block = GRAIN_ELEMENTS / ((int64_t)a.outer_block * inner) + 1;
    a.mid_block = mid_block < mid ? (int)mid_block : mid;
    a.n_mid_blocks = (mid + a.mid_block - 1) / a.mid_block;
    int64_t n_outer_blocks = (outer + a.outer_block - 1) / a.outer_block;
    if (ds)
        a.partials = (double *)cx_scratch(SLOT_PARTIALS, (size_t)n_outer_blocks * mid * 2);
    if (dx || a.partials)
        cx_parallel_for(n_outer_blocks * a.n_mid_blocks, 1, scale_mid_backward_tasks, &a);
    if (a.partials) {
        for (int64_t ob = 1; ob < n_outer_blocks; ob++)
            for (int m = 0; m < mid; m++)
                a.partials[m] += a.partials[ob * mid + m];
        for (int m = 0; m < mid; m++)
            ds[m] += (float)a.partials[m];
    } else if (ds) {
        scale_mid_ds_serial(&a, ds);
    }
}

/* ---- scale_outer_inner ------------------------------------------------------------
 * Tasks are (o, block of inner indices); each loops over mid outside and the block's
 * inner indices inside, so ds[o, block] is summed over m within the task. */
#define INNER_BLOCK 256

typedef struct {
    int outer, mid, inner, n_inner_blocks;
    const float *x, *s, *dy;
    float *y, *dx, *ds;
} scale_oi_args;

static void scale_outer_inner_forward_tasks(void *ctx, int64_t begin, int64_t end) {
    const scale_oi_args *a = ctx;
    const int mid = a->mid, inner = a->inner;
    for (int64_t task = begin; task < end; task++) {
        int64_t o = task / a->n_inner_blocks;
        int i0 = (int)(task % a->n_inner_blocks) * INNER_BLOCK;
        int n = i0 + INNER_BLOCK < inner ? INNER_BLOCK : inner - i0;
        const float *s = a->s + o * inner + i0;
        for (int m = 0; m < mid; m++) {
            size_t offset = ((size_t)o * mid + m) * inner + i0;
            const float *x = a->x + offset;
            float *y = a->y + offset;
            for (int i = 0; i < n; i++)
                y[i] = x[i] * s[i];
        }
    }
}

void cpu_scale_outer_inner_forward(cx_backend *be, int outer, int mid, int inner,
                                   const float *x, const float *s, float *y) {
    if (outer <= 0 || mid <= 0 || inner <= 0)
        return;
    scale_oi_args a = {.outer = outer, .mid = mid, .inner = inner,
                       .n_inner_blocks = (inner + INNER_BLOCK - 1) / INNER_BLOCK,
                       .x = x, .s = s, .y = y};
    int64_t work = (int64_t)mid * (inner < INNER_BLOCK ? inner : INNER_BLOCK);
    cx_parallel_for((int64_t)outer * a.n_inner_blocks, GRAIN_ELEMENTS / work + 1,
                    scale_outer_inner_forward_tasks, &a);
}

VECTOR_CLONES static void scale_outer_inner_backward_tasks(void *ctx, int64_t begin, int64_t end) {
    const scale_oi_args *a = ctx;
    const int mid = a->mid, inner = a->inner;
    double acc[INNER_BLOCK];
    for (int64_t task = begin; task < end; task++) {
        int64_t o = task / a->n_inner_blocks;
        int i0 = (int)(task % a->n_inner_blocks) * INNER_BLOCK;
        int n = i0 + INNER_BLOCK < inner ? INNER_BLOCK : inner - i0;
        const float *s = a->s + o * inner + i0;
        for (int i = 0; i < n; i++)
            acc[i] = 0.0;
        for (int m = 0; m < mid; m++) {
            size_t offset = ((size_t)o * mid + m) * inner + i0;
            const float *x = a->x + offset, *dy = a->dy + offset;
            if (a->dx) {
                float *dx = a->dx + offset;
                for (int i = 0; i < n; i++)
                    dx[i] += dy[i] * s[i];
            }
            if (a->ds)
                for (int i = 0; i < n; i++)
                    acc[i] += (double)dy[i] * x[i];
        }
        if (a->ds) {
            float *ds = a->ds + o * inner + i0;
            for (int i = 0; i < n; i++)
                ds[i] += (float)acc[i];
        }
    }
}

void cpu_scale_outer_inner_backward(cx_backend *be, int outer, int mid, int inner,
                                    const float *x, const float *s, const float *dy,
                                    float *dx, float *ds) {
    if (outer <= 0 || mid <= 0 || inner <= 0 || (!dx && !ds))
        return;
    scale_oi_args a = {.outer = outer, .mid = mid, .inner = inner,
                       .n_inner_blocks = (inner + INNER_BLOCK - 1) / INNER_BLOCK,
                       .x = x, .s = s, .dy = dy, .dx = dx, .ds = ds};
    int64_t work = (int64_t)mid * (inner < INNER_BLOCK ? inner : INNER_BLOCK);
    cx_parallel_for((int64_t)outer * a.n_inner_blocks, GRAIN_ELEMENTS / work + 1,
                    scale_outer_inner_backward_tasks, &a);
}

/* ---- transpose --------------------------------------------------------------------
 * y[n, j, i] (=|+=) x[n, i, j] for x [batch, a, b]. Tasks are (n, block of TILE rows
 * of x); within a task the columns go in TILE-wide tiles so both sides stay in cache,
 * and each tile moves in 4x4 register transposes where SSE is available. */
#define TILE 32

typedef struct {
    int a, b, n_row_blocks, accumulate;
    const float *x;
    float *y;
} transpose_args;

/* y[j*ldy + i] (=|+=) x[i*ldx + j] for i < rows, j < cols */
static void transpose_scalar(const float *x, size_t ldx, float *y, size_t ldy, int rows,
                             int cols, int accumulate) {
    for (int j = 0; j < cols; j++) {
        float *yj = y + (size_t)j * ldy;
        if (accumulate)
            for (int i = 0; i < rows; i++)
                yj[i] += x[(size_t)i * ldx + j];
        else
            for (int i = 0; i < rows; i++)
                yj[i] = x[(size_t)i * ldx + j];
    }
}

#if defined(__SSE__)
static inline void transpose_4x4(const float *x, size_t ldx, float *y, size_t ldy,
                                 int accumulate) {
    __m128 r0 = _mm_loadu_ps(x), r1 = _mm_loadu_ps(x + ldx);
    __m128 r2 = _mm_loadu_ps(x + 2 * ldx), r3 = _mm_loadu_ps(x + 3 * ldx);
    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
    if (accumulate) {
        r0 = _mm_add_ps(_mm_loadu_ps(y), r0);
        r1 = _mm_add_ps(_mm_loadu_ps(y + ldy), r1);
        r2 = _mm_add_ps(_mm_loadu_ps(y + 2 * ldy), r2);
        r3 = _mm_add_ps(_mm_loadu_ps(y + 3 * ldy), r3);
    }
    _mm_storeu_ps(y, r0);
    _mm_storeu_ps(y + ldy, r1);
    _mm_storeu_ps(y + 2 * ldy, r2);
    _mm_storeu_ps(y + 3 * ldy, r3);
}
#endif

/* One tile: rows x cols of x (leading dim ldx) into y (leading dim ldy). */
static void transpose_tile(const float *x, size_t ldx, float *y, size_t ldy, int rows, int cols,
                           int accumulate) {
#if defined(__SSE__)
    int rows4 = rows / 4 * 4, cols4 = cols / 4 * 4;
    for (int i = 0; i < rows4; i += 4)
        for (int j = 0; j < cols4; j += 4)
            transpose_4x4(x + (size_t)i * ldx + j, ldx, y + (size_t)j * ldy + i, ldy, accumulate);
    /* the ragged right columns and bottom rows */
    transpose_scalar(x + cols4, ldx, y + (size_t)cols4 * ldy, ldy, rows4, cols - cols4, accumulate);
    transpose_scalar(x + (size_t)rows4 * ldx, ldx, y + rows4, ldy, rows - rows4, cols, accumulate);
#else
    transpose_scalar(x, ldx, y, ldy, rows, cols, accumulate);
#endif
}

static void transpose_tasks(void *ctx, int64_t begin, int64_t end) {
    const transpose_args *t = ctx;
    const int rows = t->a, cols = t->b;
    for (int64_t task = begin; task < end; task++) {
        int64_t n = task / t->n_row_blocks;
        int i0 = (int)(task % t->n_row_blocks) * TILE;
        int n_rows = i0 + TILE < rows ? TILE : rows - i0;
        const float *x = t->x + (size_t)n * rows * cols;
        float *y = t->y + (size_t)n * rows * cols;
        for (int j0 = 0; j0 < cols; j0 += TILE) {
            int n_cols = j0 + TILE < cols ? TILE : cols - j0;
            transpose_tile(x + (size_t)i0 * cols + j0, cols, y + (size_t)j0 * rows + i0, rows,
                           n_rows, n_cols, t->accumulate);
        }
    }
}

static void transpose_run(int batch, int a, int b, const float *x, float *y, int accumulate) {
    if (batch <= 0 || a <= 0 || b <= 0 || !y)
        return;
    transpose_args t = {.a = a, .b = b, .n_row_blocks = (a + TILE - 1) / TILE,
                        .accumulate = accumulate, .x = x, .y = y};
    int64_t work = (int64_t)TILE * b;
    cx_parallel_for((int64_t)batch * t.n_row_blocks, GRAIN_ELEMENTS / work + 1, transpose_tasks,
                    &t);
}

void cpu_transpose(cx_backend *be, int batch, int a, int b, const float *x, float *y) {
    transpose_run(batch, a, b, x, y, 0);
}

void cpu_transpose_accumulate(cx_backend *be, int batch, int a, int b, const float *x,
                              float *y) {
    transpose_run(batch, a, b, x, y, 1);
}

/* ---- copy_channels ----------------------------------------------------------------
 * dst[n, dst_offset + c, :] (=|+=) src[n, src_offset + c, :] for c < n_channels; rows of
 * hw floats, one task per block of (n, c) rows. */
typedef struct {
    int hw, n_channels, src_channels, src_offset, dst_channels, dst_offset, accumulate;
    const float *src;
    float *dst;
} copy_channels_args;

static void copy_channels_rows(void *ctx, int64_t begin, int64_t end) {
    const copy_channels_args *a = ctx;
    const int hw = a->hw;
    for (int64_t row = begin; row < end; row++) {
        int64_t n = row / a->n_channels;
        int c = (int)(row % a->n_channels);
        const float *src = a->src + ((size_t)n * a->src_channels + a->src_offset + c) * hw;
        float *dst = a->dst + ((size_t)n * a->dst_channels + a->dst_offset + c) * hw;
        if (a->accumulate)
            for (int i = 0; i < hw; i++)
                dst[i] += src[i];
        else
            memcpy(dst, src, (size_t)hw * sizeof *dst);
    }
}

void cpu_copy_channels(cx_backend *be, int batch, int hw, int n_channels, const float *src,
                       int src_channels, int src_offset, float *dst, int dst_channels,
                       int dst_offset, int accumulate) {
    if (batch <= 0 || hw <= 0 || n_channels <= 0 || !dst)
        return;
    copy_channels_args a = {hw, n_channels, src_channels, src_offset, dst_channels,
                            dst_offset, accumulate, src, dst};
    cx_parallel_for((int64_t)batch * n_channels, GRAIN_ELEMENTS / hw + 1, copy_channels_rows, &a);
}
