/* Layout ops and broadcast products on the GPU, host side (shapes in ops/op_list.h; the
 * kernels are in device/layout.cuh):
 *   transpose, transpose_accumulate   x [batch, a, b] -> y [batch, b, a] (=, +=)
 *   copy_channels                     channel blocks between NCHW tensors (=, +=)
 *   scale_mid_forward/backward        y[o,m,i] = x[o,m,i] s[m]
 *   scale_outer_inner_forward/backward  y[o,m,i] = x[o,m,i] s[o,i]
 * As on the CPU: forwards overwrite, backwards accumulate (+=) and skip NULL gradients.
 *
 * Fixed-order reductions (no atomics; the order depends on the shape alone), fp32:
 *   ds of scale_mid, two stages:
 *     inner < SCALE_MID_PLANE_MIN ("columns": NHWC channel scales, inner = 1): in the
 *       [outer, mid*inner] view, thread k sums column k over a chunk of rows_per_chunk
 *       rows in order (rows_per_chunk = max(32, ceil(outer / 512))); otherwise
 *       ("planes": NCHW channel and per-sample scales) a block sums each piece of
 *       SCALE_MID_PLANE_CHUNK floats of an (o, m) plane (strided per thread, then a
 *       fixed tree);
 *     then a warp per m adds that m's partials (strided per lane, then a butterfly) and
 *     accumulates into ds[m]. The partials live in the backend's scratch slot 0.
 *   ds of scale_outer_inner: one thread per (o, i) adds dy x over m in order.
 * The CPU sums these in double; fp32 with these short chains and trees stays well inside
 * the 1e-4 tolerance of the backward tests. dx is fused into the ds passes when both are
 * wanted, with the same arithmetic as the dx-only kernel (bit-identical). */
#include "common.cuh"
#include "device/layout.cuh"

/* ---- transpose ---- */

static void transpose_run(cx_backend *be, int batch, int a, int b, const float *x, float *y,
                          int accumulate, const char *name) {
    cu_state *st = cu_get(be);
    if (batch <= 0 || a <= 0 || b <= 0 || !y)
        return;
    size_t tiles = (size_t)batch * cu_ceil_div((size_t)a, TRANSPOSE_TILE) *
                   cu_ceil_div((size_t)b, TRANSPOSE_TILE);
    unsigned blocks = tiles > ((size_t)1 << 20) ? 1u << 20 : (unsigned)tiles;
    CX_LAUNCH(transpose_tiles_kernel, blocks, dim3(TRANSPOSE_TILE, TRANSPOSE_ROWS), 0,
              st->stream)(batch, a, b, x, y, accumulate);
    cu_ok_launch(st, name);
}

void cu_transpose(cx_backend *be, int batch, int a, int b, const float *x, float *y) {
    transpose_run(be, batch, a, b, x, y, 0, "transpose");
}

void cu_transpose_accumulate(cx_backend *be, int batch, int a, int b, const float *x,
                             float *y) {
    transpose_run(be, batch, a, b, x, y, 1, "transpose_accumulate");
}

/* ---- copy_channels ---- */

void cu_copy_channels(cx_backend *be, int batch, int hw, int n_channels, const float *src,
                      int src_channels, int src_offset, float *dst, int dst_channels,
                      int dst_offset, int accumulate) {
    cu_state *st = cu_get(be);
    if (batch <= 0 || hw <= 0 || n_channels <= 0 || !dst)
        return;
    size_t run = (size_t)n_channels * (size_t)hw;
    size_t src_image = (size_t)src_channels * (size_t)hw;
    size_t dst_image = (size_t)dst_channels * (size_t)hw;
    unsigned images = batch > 65535 ? 65535u : (unsigned)batch;
    /* at most about 2^20 blocks in all; the kernel's loops cover the rest */
    size_t per_image = cu_ceil_div(run, LAYOUT_BLOCK);
    size_t cap = ((size_t)1 << 20) / images;
    dim3 grid((unsigned)(per_image < cap ? per_image : (cap ? cap : 1)), images);
    CX_LAUNCH(copy_channels_kernel, grid, LAYOUT_BLOCK, 0, st->stream)(
        batch, run, src + (size_t)src_offset * hw, src_image, dst + (size_t)dst_offset * hw,
        dst_image, accumulate ? 1 : 0);
    cu_ok_launch(st, "copy_channels");
}

/* ---- scale_mid ---- */

void cu_scale_mid_forward(cx_backend *be, int outer, int mid, int inner, const float *x,
                          const float *s, float *y) {
    cu_state *st = cu_get(be);
    if (outer <= 0 || mid <= 0 || inner <= 0)
        return;
    size_t n = (size_t)outer * (size_t)mid * (size_t)inner;
    CX_LAUNCH(scale_mid_forward_kernel, cu_blocks(n, LAYOUT_BLOCK), LAYOUT_BLOCK, 0,
              st->stream)(n, mid, inner, x, s, y);
    cu_ok_launch(st, "scale_mid_forward");
}

void cu_scale_mid_backward(cx_backend *be, int outer, int mid, int inner, const float *x,
                           const float *s, const float *dy, float *dx, float *ds) {
    cu_state *st = cu_get(be);
    if (outer <= 0 || mid <= 0 || inner <= 0 || (!dx && !ds))
        return;
    size_t n = (size_t)outer * (size_t)mid * (size_t)inner;
    if (!ds) {
        CX_LAUNCH(scale_mid_dx_kernel, cu_blocks(n, LAYOUT_BLOCK), LAYOUT_BLOCK, 0, st->stream)(
            n, mid, inner, s, dy, dx);
        cu_ok_launch(st, "scale_mid_backward");
        return;
    }
    size_t count; /* partials per m */
    float *partial;
    if (inner < SCALE_MID_PLANE_MIN) {
        size_t columns = (size_t)mid * (size_t)inner;
        int rows_per_chunk = (int)cu_ceil_div((size_t)outer, SCALE_MID_MAX_CHUNKS);
        if (rows_per_chunk < SCALE_MID_MIN_ROWS_PER_CHUNK)
            rows_per_chunk = SCALE_MID_MIN_ROWS_PER_CHUNK;
        size_t n_chunks = cu_ceil_div((size_t)outer, (size_t)rows_per_chunk);
        size_t column_blocks = cu_ceil_div(columns, SCALE_MID_COLUMN_BLOCK);
        count = (size_t)inner * n_chunks;
        if (column_blocks > 0x7fffffffu || count > 0x7fffffffu) {
            cu_record(st, CX_EINVAL, "scale_mid_backward: mid %d x inner %d is too large", mid,
                      inner);
            return;
        }
        partial = cu_scratch(st, 0, columns * n_chunks);
        if (!partial)
            return;
        CX_LAUNCH(scale_mid_columns_kernel, dim3((unsigned)column_blocks, (unsigned)n_chunks),
                  SCALE_MID_COLUMN_BLOCK, 0, st->stream)(outer, mid, inner, rows_per_chunk, x,
                                                         s, dy, dx, partial);
    } else {
        size_t n_chunks = cu_ceil_div((size_t)inner, SCALE_MID_PLANE_CHUNK);
        size_t pieces = (size_t)outer * (size_t)mid * n_chunks;
        count = (size_t)outer * n_chunks;
        if (count > 0x7fffffffu) {
            cu_record(st, CX_EINVAL, "scale_mid_backward: outer %d x inner %d is too large",
                      outer, inner);
            return;
        }
        partial = cu_scratch(st, 0, pieces);
        if (!partial)
            return;
        unsigned blocks = pieces > ((size_t)1 << 20) ? 1u << 20 : (unsigned)pieces;
        CX_LAUNCH(scale_mid_planes_kernel, blocks, SCALE_MID_PLANE_BLOCK, 0, st->stream)(
            outer, mid, inner, x, s, dy, dx, partial);
    }
    if (!cu_ok_launch(st, "scale_mid_backward"))
        return;
    CX_LAUNCH(scale_mid_combine_kernel, (unsigned)cu_ceil_div((size_t)mid, LAYOUT_COMBINE_WARPS),
              32 * LAYOUT_COMBINE_WARPS, 0, st->stream)(mid, (int)count, partial, ds);
    cu_ok_launch(st, "scale_mid_backward (combine)");
}

/* ---- scale_outer_inner ---- */

void cu_scale_outer_inner_forward(cx_backend *be, int outer, int mid, int inner,
                                  const float *x, const float *s, float *y) {
    cu_state *st = cu_get(be);
    if (outer <= 0 || mid <= 0 || inner <= 0)
        return;
    size_t n = (size_t)outer * (size_t)mid * (size_t)inner;
    CX_LAUNCH(scale_outer_inner_forward_kernel, cu_blocks(n, LAYOUT_BLOCK), LAYOUT_BLOCK, 0,
              st->stream)(n, mid, inner, x, s, y);
    cu_ok_launch(st, "scale_outer_inner_forward");
}

void cu_scale_outer_inner_backward(cx_backend *be, int outer, int mid, int inner,
                                   const float *x, const float *s, const float *dy, float *dx,
                                   float *ds) {
    cu_state *st = cu_get(be);
    if (outer <= 0 || mid <= 0 || inner <= 0 || (!dx && !ds))
        return;
    size_t n = (size_t)outer * (size_t)inner;
    CX_LAUNCH(scale_outer_inner_backward_kernel, cu_blocks(n, LAYOUT_BLOCK), LAYOUT_BLOCK, 0,
              st->stream)(n, mid, inner, x, s, dy, dx, ds);
    cu_ok_launch(st, "scale_outer_inner_backward");
}
