/* The CPU GEMM's micro-kernels and operand packing (gemm_kernels.c), as its driver
 * (gemm.c) uses them. Private to those two files; ops include gemm.h. */
#ifndef CX_CPU_GEMM_KERNELS_H
#define CX_CPU_GEMM_KERNELS_H

#include "gemm.h"

#define KC_MAX 320 /* longest K block; A micro-panels (MR x kc) stay in L1 */

typedef struct {
    float alpha, beta;
    int load_c;                   /* read C (beta != 0, or a later K block / item) */
    const float *bias_m, *bias_n; /* offset to the tile; NULL when absent */
} gemm_epilogue;

/* kc steps over the A rows a + a_off[k] (MR floats, broadcast) and the B rows
 * b + b_off[k] (NR floats); a NULL offset table means a packed panel (rows k*MR, k*NR
 * apart), a table addresses a matrix read in place. Writes the mr x nr top-left part of
 * the tile at c. */
typedef void (*micro_kernel_fn)(int kc, const float *a, const int64_t *a_off, const float *b,
                                const int64_t *b_off, float *c, int64_t ldc, int mr, int nr,
                                const gemm_epilogue *ep);

typedef struct {
    const char *name;
    int mr, nr;
    micro_kernel_fn fn;
} micro_kernel;

/* The micro-kernel for a product of this shape (least padding among those this CPU
 * runs; they all compute the same bits except the portable one). */
const micro_kernel *cx_gemm_choose_kernel(int M, int N);

/* Offset of view(x, k) from m->data for item 0, by the strides or the offset tables. */
static inline int64_t matrix_x_offset(const cx_gemm_matrix *m, int x) {
    return m->x_offsets ? m->x_offsets[x] : (int64_t)x * m->x_stride;
}
static inline int64_t matrix_k_offset(const cx_gemm_matrix *m, int k) {
    return m->k_offsets ? m->k_offsets[k] : (int64_t)k * m->k_stride;
}
/* x-contiguous: view(x, k) = data[item*item_stride + k_offset(k) + x] */
static inline int matrix_x_contiguous(const cx_gemm_matrix *m) {
    return !m->x_offsets && m->x_stride == 1;
}

#endif
