/* Layout and broadcast-product kernels (device code; launched by kernels/layout.cu, which
 * documents the shapes and the reduction orders):
 *   transpose          x [batch, a, b] -> y [batch, b, a] (=|+=), 32x32 tiles through
 *                      shared memory, both sides coalesced
 *   copy_channels      dst[n, dst_offset + c, :] (=|+=) src[n, src_offset + c, :]
 *   scale_mid          y[o,m,i] = x[o,m,i] s[m]; backward dx += dy s[m], ds[m] += sum dy x
 *   scale_outer_inner  y[o,m,i] = x[o,m,i] s[o,i]; backward dx += dy s, ds[o,i] += sum_m dy x
 * Every output element is written by one thread; every sum has an order fixed by the
 * shape alone (no atomics). Products added into an accumulating gradient are rounded
 * on their own (__fmul_rn, then __fadd_rn), as the CPU backend computes them: nvcc may not
 * contract them into an fma, so two kernels computing the same dx give the same bits. */
#ifndef CX_KERNELS_DEVICE_LAYOUT_CUH
#define CX_KERNELS_DEVICE_LAYOUT_CUH

#include "helpers.cuh"

// nvrtc-check: hot transpose_tiles_kernel copy_channels_kernel scale_mid_forward_kernel
// nvrtc-check: hot scale_mid_dx_kernel scale_mid_columns_kernel scale_mid_planes_kernel
// nvrtc-check: hot scale_mid_combine_kernel scale_outer_inner_forward_kernel
// nvrtc-check: hot scale_outer_inner_backward_kernel

/* transpose: a block of TRANSPOSE_TILE x TRANSPOSE_ROWS threads moves one tile at a time */
#define TRANSPOSE_TILE 32
#define TRANSPOSE_ROWS 8
/* copy_channels and the elementwise kernels: threads per block */
#define LAYOUT_BLOCK 256
/* scale_mid's ds: "column" partials (inner < SCALE_MID_PLANE_MIN): a thread per column
 * k = m*inner + i of the [outer, mid*inner] view sums a chunk of rows; "plane" partials:
 * a block per SCALE_MID_PLANE_CHUNK floats of one (o, m) plane. */
#define SCALE_MID_COLUMN_BLOCK 128
#define SCALE_MID_MAX_CHUNKS 512
#define SCALE_MID_MIN_ROWS_PER_CHUNK 32
#define SCALE_MID_PLANE_MIN 1024
#define SCALE_MID_PLANE_CHUNK 4096
#define SCALE_MID_PLANE_BLOCK 256
/* the combine: a warp per output, LAYOUT_COMBINE_WARPS warps per block */
#define LAYOUT_COMBINE_WARPS 8

/* i / d and i % d: in 32-bit arithmetic whenever i fits (a 64-bit division is a long
 * subroutine on the GPU; tensors of 2^32 floats are not expected, but stay correct). */
static __device__ __forceinline__ size_t layout_div(size_t i, unsigned d) {
    return i <= 0xffffffffu ? (size_t)((unsigned)i / d) : i / d;
}
static __device__ __forceinline__ unsigned layout_mod(size_t i, unsigned d) {
    return i <= 0xffffffffu ? (unsigned)i % d : (unsigned)(i % d);
}

/* Sum over the 32 lanes by an xor butterfly: every lane adds the same two operands at
 * each step, so every lane ends with the same, launch-independent value. */
static __device__ __forceinline__ float layout_warp_sum(float v) {
    for (int offset = 16; offset > 0; offset /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

/* ---- transpose ------------------------------------------------------------------------
 * block (TRANSPOSE_TILE, TRANSPOSE_ROWS); 1-D grid looping over the tiles (n, ta, tb) of
 * x [batch, a, b]. A tile is read along rows of x (threadIdx.x along b) and written along
 * rows of y (threadIdx.x along a); the tile's row pitch TILE + 1 puts the column reads of
 * shared memory in 32 different banks. */
__global__ void transpose_tiles_kernel(int batch, int a, int b, const float *x, float *y,
                                       int accumulate) {
    __shared__ float tile[TRANSPOSE_TILE][TRANSPOSE_TILE + 1];
    const unsigned tiles_a = (unsigned)(a + TRANSPOSE_TILE - 1) / TRANSPOSE_TILE;
    const unsigned tiles_b = (unsigned)(b + TRANSPOSE_TILE - 1) / TRANSPOSE_TILE;
    const size_t per_matrix = (size_t)tiles_a * tiles_b;
    const size_t n_tiles = per_matrix * (size_t)batch;
    const int tx = threadIdx.x, ty = threadIdx.y;
    for (size_t t = blockIdx.x; t < n_tiles; t += gridDim.x) { /* uniform over the block */
        size_t n = t / per_matrix;
        size_t in_matrix = t - n * per_matrix;
        int i0 = (int)(in_matrix / tiles_b) * TRANSPOSE_TILE;
        int j0 = (int)(in_matrix % tiles_b) * TRANSPOSE_TILE;
        const float *xn = x + n * (size_t)a * (size_t)b;
        float *yn = y + n * (size_t)a * (size_t)b;
        for (int r = ty; r < TRANSPOSE_TILE; r += TRANSPOSE_ROWS) {
            int i = i0 + r, j = j0 + tx;
            if (i < a && j < b)
                tile[r][tx] = xn[(size_t)i * b + j];
        }
        __syncthreads();
        for (int r = ty; r < TRANSPOSE_TILE; r += TRANSPOSE_ROWS) {
            int j = j0 + r, i = i0 + tx;
            if (j < b && i < a) {
                float *out = yn + (size_t)j * a + i;
                float v = tile[tx][r];
                *out = accumulate ? *out + v : v;
            }
        }
        __syncthreads(); /* the next tile overwrites this one */
    }
}

/* ---- copy_channels ----------------------------------------------------------------------
 * The n_channels channels of one image are one contiguous run of n_channels * hw floats
 * on both sides. grid (x over the run, y over the images; both loop). */
__global__ void copy_channels_kernel(int batch, size_t run, const float *src,
                                     size_t src_image, float *dst, size_t dst_image,
                                     int accumulate) {
    for (size_t n = blockIdx.y; n < (size_t)batch; n += gridDim.y) {
        const float *s = src + n * src_image;
        float *d = dst + n * dst_image;
        for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < run;
             k += (size_t)blockDim.x * gridDim.x)
            d[k] = accumulate ? d[k] + s[k] : s[k];
    }
}

/* ---- scale_mid ------------------------------------------------------------------------ */

/* y [outer, mid, inner] = x * s[m]; n = outer * mid * inner */
__global__ void scale_mid_forward_kernel(size_t n, int mid, int inner, const float *x,
                                         const float *s, float *y) {
    CX_GRID_STRIDE(e, n) {
        unsigned m = layout_mod(layout_div(e, (unsigned)inner), (unsigned)mid);
        y[e] = x[e] * s[m];
    }
}

/* dx += dy * s[m] (the backward without ds) */
__global__ void scale_mid_dx_kernel(size_t n, int mid, int inner, const float *s,
                                    const float *dy, float *dx) {
    CX_GRID_STRIDE(e, n) {
        unsigned m = layout_mod(layout_div(e, (unsigned)inner), (unsigned)mid);
        dx[e] = __fadd_rn(dx[e], __fmul_rn(dy[e], s[m]));
    }
}

/* Column partials: grid (ceil(K / SCALE_MID_COLUMN_BLOCK), n_chunks), K = mid * inner;
 * thread k sums dy x over the rows [chunk * rows_per_chunk, ...) of column k in row order
 * and writes partial[k * n_chunks + chunk], so that the partials of one m are the
 * contiguous inner * n_chunks floats from m * inner * n_chunks. dx (may be null) gets its
 * dy s[m] on the way. */
__global__ void scale_mid_columns_kernel(int outer, int mid, int inner, int rows_per_chunk,
                                         const float *x, const float *s, const float *dy,
                                         float *dx, float *partial) {
    const size_t K = (size_t)mid * (size_t)inner;
    const size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= K)
        return;
    const int chunk = blockIdx.y, n_chunks = gridDim.y;
    const int o_end = min(outer, (chunk + 1) * rows_per_chunk);
    const float scale = dx ? s[k / (unsigned)inner] : 0.0f;
    float acc = 0.0f;
    for (int o = chunk * rows_per_chunk; o < o_end; o++) {
        size_t at = (size_t)o * K + k;
        float g = dy[at];
        if (dx)
            dx[at] = __fadd_rn(dx[at], __fmul_rn(g, scale));
        acc += g * x[at];
    }
    partial[k * (size_t)n_chunks + chunk] = acc;
}

/* Sum over the SCALE_MID_PLANE_BLOCK threads of a block in a fixed order (butterflies,
 * then the warp totals in warp order); every thread gets the total. shared holds a float
 * per warp and is free again when this returns. */
static __device__ float layout_block_sum(float v, float *shared) {
    v = layout_warp_sum(v);
    if (threadIdx.x % 32 == 0)
        shared[threadIdx.x / 32] = v;
    __syncthreads();
    float total = shared[0];
    for (int w = 1; w < SCALE_MID_PLANE_BLOCK / 32; w++)
        total += shared[w];
    __syncthreads();
    return total;
}

/* Plane partials: block SCALE_MID_PLANE_BLOCK, a 1-D grid looping over the pieces
 * (row = o * mid + m, chunk) of SCALE_MID_PLANE_CHUNK floats; partial
 * [mid, outer, n_chunks], so that the partials of one m are contiguous (o, then chunk).
 * dx (may be null) gets its dy s[m] on the way. */
__global__ void scale_mid_planes_kernel(int outer, int mid, int inner, const float *x,
                                        const float *s, const float *dy, float *dx,
                                        float *partial) {
    __shared__ float warp_totals[SCALE_MID_PLANE_BLOCK / 32];
    const int n_chunks = (inner + SCALE_MID_PLANE_CHUNK - 1) / SCALE_MID_PLANE_CHUNK;
    const size_t n_pieces = (size_t)outer * (size_t)mid * (size_t)n_chunks;
    for (size_t piece = blockIdx.x; piece < n_pieces; piece += gridDim.x) { /* uniform */
        size_t row = piece / (size_t)n_chunks;
        int chunk = (int)(piece - row * (size_t)n_chunks);
        int m = (int)(row % (size_t)mid);
        size_t o = row / (size_t)mid;
        const size_t base = row * (size_t)inner;
        const float scale = s[m];
        const int p_end = min(inner, (chunk + 1) * SCALE_MID_PLANE_CHUNK);
        float acc = 0.0f;
        for (int p = chunk * SCALE_MID_PLANE_CHUNK + threadIdx.x; p < p_end;
             p += SCALE_MID_PLANE_BLOCK) {
            float g = dy[base + p];
            if (dx)
                dx[base + p] = __fadd_rn(dx[base + p], __fmul_rn(g, scale));
            acc += g * x[base + p];
        }
        float total = layout_block_sum(acc, warp_totals);
        if (threadIdx.x == 0)
            partial[((size_t)m * outer + o) * n_chunks + chunk] = total;
    }
}

/* ds[m] += sum_j partial[m * count + j], j < count: a warp per m (lanes take j = lane,
 * lane + 32, ... in order, then a butterfly). block 32 * LAYOUT_COMBINE_WARPS. */
__global__ void scale_mid_combine_kernel(int mid, int count, const float *partial, float *ds) {
    const int m = blockIdx.x * LAYOUT_COMBINE_WARPS + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (m >= mid) /* uniform across the warp */
        return;
    const float *p = partial + (size_t)m * count;
    float acc = 0.0f;
    for (int j = lane; j < count; j += 32)
        acc += p[j];
    acc = layout_warp_sum(acc);
    if (lane == 0)
        ds[m] += acc;
}

/* ---- scale_outer_inner ------------------------------------------------------------------ */

/* y [outer, mid, inner] = x * s[o, i] */
__global__ void scale_outer_inner_forward_kernel(size_t n, int mid, int inner, const float *x,
                                                 const float *s, float *y) {
    CX_GRID_STRIDE(e, n) {
        size_t row = layout_div(e, (unsigned)inner); /* o * mid + m */
        size_t i = e - row * (size_t)inner;
        size_t o = layout_div(row, (unsigned)mid);
        y[e] = x[e] * s[o * (size_t)inner + i];
    }
}

/* A thread per (o, i), n = outer * inner: dx[o, m, i] += dy s[o, i] for every m (dx may
 * be null), and ds[o, i] += sum over m in order of dy x (ds may be null). */
__global__ void scale_outer_inner_backward_kernel(size_t n, int mid, int inner,
                                                  const float *x, const float *s,
                                                  const float *dy, float *dx, float *ds) {
    CX_GRID_STRIDE(e, n) {
        size_t o = layout_div(e, (unsigned)inner);
        size_t i = e - o * (size_t)inner;
        size_t at = o * (size_t)mid * (size_t)inner + i;
        const float scale = dx ? s[e] : 0.0f;
        float acc = 0.0f;
        for (int m = 0; m < mid; m++, at += (size_t)inner) {
            float g = dy[at];
            if (dx)
                dx[at] = __fadd_rn(dx[at], __fmul_rn(g, scale));
            if (ds)
                acc += g * x[at];
        }
        if (ds)
            ds[e] += acc;
    }
}

#endif
