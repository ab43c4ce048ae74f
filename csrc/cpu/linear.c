/* Linear layer (PyTorch nn.Linear layout) on top of the blocked GEMM.
 *   x [rows, in_features], w [out_features, in_features], bias [out_features] or NULL
 *   y [rows, out_features] = x w^T + bias
 * Backward (accumulating): dx += dy w, dw += dy^T x, dbias += sum over rows of dy. */
#include "cpu_ops.h"
#include "cpu_error.h"
#include "gemm.h"

/* dbias partial sums: rows are cut into fixed chunks (a function of rows only), each
 * chunk's column sums go to its own row of partials, and the partials are added in
 * chunk order, so the result does not depend on the thread count. */
#define BIAS_CHUNK_ROWS 256

void cpu_linear_forward(cx_backend *be, int rows, int in_features, int out_features,
                        const float *x, const float *w, const float *bias, float *y) {
    (void)be;
    cx_gemm_matrix a = cx_gemm_matrix_a(x, in_features, 0, 0);
    cx_gemm_matrix b = cx_gemm_matrix_b(w, in_features, 1, 0);
    cx_gemm_problem p = {0};
    p.M = rows;
    p.N = out_features;
    p.K = in_features;
    p.items = 1;
    p.alpha = 1.0f;
    p.beta = 0.0f;
    p.A = (cx_gemm_operand){cx_gemm_pack_matrix, &a};
    p.B = (cx_gemm_operand){cx_gemm_pack_matrix, &b};
    p.C = y;
    p.ldc = out_features;
    p.bias_n = bias;
    cx_gemm_run(&p);
}

typedef struct {
    int rows, cols;
    const float *dy;  /* [rows, cols] */
    float *partials;  /* [n_chunks, cols] */
} column_sum_ctx;

static void column_sum_task(void *vctx, int64_t begin, int64_t end) {
    const column_sum_ctx *c = vctx;
    for (int64_t chunk = begin; chunk < end; chunk++) {
        float *sums = c->partials + chunk * c->cols;
        int64_t r0 = chunk * BIAS_CHUNK_ROWS;
        int64_t r1 = r0 + BIAS_CHUNK_ROWS < c->rows ? r0 + BIAS_CHUNK_ROWS : c->rows;
        for (int j = 0; j < c->cols; j++)
            sums[j] = 0.0f;
        for (int64_t r = r0; r < r1; r++) {
            const float *row = c->dy + r * c->cols;
            for (int j = 0; j < c->cols; j++)
                sums[j] += row[j];
        }
    }
}

/* out[j] += sum over rows of m[r, j], deterministic (see BIAS_CHUNK_ROWS). */
static void accumulate_column_sums(int rows, int cols, const float *m, float *out) {
    int64_t n_chunks = (rows + BIAS_CHUNK_ROWS - 1) / BIAS_CHUNK_ROWS;
    float *partials = cx_scratch(0, (size_t)n_chunks * cols);
    if (!partials) {
        cx_cpu_record_error(CX_ENOMEM, "linear backward: out of memory for bias partial sums");
        return;
    }
    column_sum_ctx ctx = {rows, cols, m, partials};
    cx_parallel_for(n_chunks, 1, column_sum_task, &ctx);
    for (int j = 0; j < cols; j++) {
        float total = 0.0f;
        for (int64_t chunk = 0; chunk < n_chunks; chunk++)
            total += partials[chunk * cols + j];
        out[j] += total;
    }
}

void cpu_linear_backward(cx_backend *be, int rows, int in_features, int out_features,
                         const float *x, const float *w, const float *dy, float *dx, float *dw,
                         float *dbias) {
    (void)be;
    if (rows <= 0)
        return;
    if (dx) /* dx [rows, in] += dy [rows, out] . w [out, in] */
        cx_gemm(0, 0, rows, in_features, out_features, 1.0f, dy, out_features, w, in_features,
                1.0f, dx, in_features);
    if (dw) /* dw [out, in] += dy^T [out, rows] . x [rows, in] */
        cx_gemm(1, 0, out_features, in_features, rows, 1.0f, dy, out_features, x, in_features,
                1.0f, dw, in_features);
    if (dbias)
        accumulate_column_sums(rows, out_features, dy, dbias);
}
