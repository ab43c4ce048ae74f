/* Single-precision matrix products for the CPU ops (internal to csrc/cpu).
 *
 * Row-major throughout. op(A) is M x K, op(B) is K x N, C is M x N:
 *   C = alpha * op(A) op(B) + beta * C      (beta 0: C is not read; beta 1: accumulate)
 *
 * Determinism: every element of C is the sum over k in increasing order, done as one
 * fused-multiply-add chain per K block; K blocks are chosen from K alone and added to C
 * in order. Threads split the output into tiles only (never K), so results do not depend
 * on the thread count, the tile sizes or which micro-kernel ran (AVX-512 and AVX2 give
 * the same bits; the portable fallback, used without AVX2+FMA, rounds differently).
 *
 * Threads: a product splits its output tiles with cx_parallel_for; called from inside a
 * cx_parallel_for task it simply runs on the calling thread.
 *
 * Scratch slots: the GEMM packs into cx_scratch slots CX_GEMM_SLOT_A and CX_GEMM_SLOT_B
 * (2 and 3) of whichever thread runs a tile; callers keep their own temporaries in
 * slots 0 and 1. */
#ifndef CX_CPU_GEMM_H
#define CX_CPU_GEMM_H

#include "../core/cx.h"

#define CX_GEMM_SLOT_A 2
#define CX_GEMM_SLOT_B 3

/* C [M, N] (leading dimension ldc) = alpha * op(A) op(B) + beta * C
 *   op(A) = A [M, K] (lda) or, with trans_a, A^T where A is [K, M]
 *   op(B) = B [K, N] (ldb) or, with trans_b, B^T where B is [N, K] */
void cx_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
             int lda, const float *B, int ldb, float beta, float *C, int ldc);


/* ---- the general form, for ops whose operands are not plain matrices ----------------
 * An operand is described by a packing function. Both operands are seen "K-major":
 * A as the M x K matrix op(A), B as op(B)^T, i.e. N x K. pack() writes rows
 * [x0, x0 + nx) of that view, restricted to columns [k0, k0 + kc), as ceil(nx / width)
 * panels of kc x width floats: panel p holds dst[p*kc*width + k*width + i] =
 * view(x0 + p*width + i, k0 + k), with zeros for rows past x0 + nx.
 * `item` selects the batch item (see cx_gemm_problem). This lets convolutions feed the
 * GEMM straight from the image (implicit im2col) without materialising columns. */
typedef void (*cx_gemm_pack_fn)(const void *ctx, int item, int k0, int kc, int x0, int nx,
                                int width, float *dst);

typedef struct {
    cx_gemm_pack_fn pack;
    const void *ctx;
} cx_gemm_operand;

/* A strided matrix as an operand: view(x, k) = data[item*item_stride + x*x_stride +
 * k*k_stride]. Either stride may be replaced by a table of offsets (x_offsets[x] for
 * x*x_stride, k_offsets[k] for k*k_stride; at most one table): convolutions use
 * k_offsets to address the filter taps of a padded image. Use with
 * pack = cx_gemm_pack_matrix and ctx = &matrix. When the view is contiguous along x
 * (x_stride 1, no x_offsets) the GEMM may read B rows in place instead of packing them. */
typedef struct {
    const float *data;
    int64_t x_stride, k_stride, item_stride;
    const int64_t *x_offsets, *k_offsets;
} cx_gemm_matrix;
void cx_gemm_pack_matrix(const void *ctx, int item, int k0, int kc, int x0, int nx,
                         int width, float *dst);
/* Matrix views for op(A) and op(B) of the cx_gemm() arguments. */
cx_gemm_matrix cx_gemm_matrix_a(const float *A, int lda, int trans_a, int64_t item_stride);
cx_gemm_matrix cx_gemm_matrix_b(const float *B, int ldb, int trans_b, int64_t item_stride);

/* items independent products C_t = alpha op(A_t) op(B_t) + beta C_t (C_t at
 * C + t*c_item_stride), or, with reduce_items, one product summed over the items in
 * order: C = alpha * sum_t op(A_t) op(B_t) + beta C.
 * Optional bias added once (with the first K block): bias_m[i] to row i, bias_n[j] to
 * column j: C = alpha*acc + beta*C + bias. */
typedef struct {
    int M, N, K;
    int items, reduce_items;
    float alpha, beta;
    cx_gemm_operand A, B;
    float *C;
    int64_t ldc, c_item_stride;
    const float *bias_m, *bias_n;
} cx_gemm_problem;

void cx_gemm_run(const cx_gemm_problem *p);

/* Which micro-kernel this machine uses: "avx512", "avx2" or "generic". */
const char *cx_gemm_kernel_name(void);
/* Test hook: run the micro-kernels of one level (1 portable, 2 AVX2, 3 AVX-512) or 0 for
 * automatic; returns -1 (and changes nothing) for a level this CPU lacks. Not
 * thread-safe: call it between products. */
int cx_gemm_force_isa(int level);

#endif
