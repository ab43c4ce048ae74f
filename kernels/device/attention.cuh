/* Cross-covariance attention (XCA) kernels (device code; launched by kernels/attention.cu,
 * which documents the math, the launch sequence and the scratch layout).
 *
 * Per (batch b, head h) with d = head_dim and N tokens, the token-major operands are
 * rows of qkv [B, N, 3C] or dout [B, N, C]: element (b, n, channel c of head h) of an
 * operand with row stride S starts at p[b*N*S + n*S + h*d + c] (p already offset to the
 * q, k or v part). Two shapes of product, both tiled through shared memory:
 *   gram:   G[i, j] = sum_n a[n, i] b[n, j]        (d x d, reduced over the tokens)
 *   tokens: out[n, o] = sum_r x[n, r] M(o, r)       (N x d, reduced over d channels)
 * Every float sum is one __fmaf_rn chain in a fixed order (tokens in increasing order
 * inside a chunk of XCA_TOKEN_CHUNK; chunk partials added in double, in chunk order, by
 * xca_combine_kernel), and the d x d work reduces across lanes by xor butterflies (each
 * lane adds the same two operands, so all lanes agree): no atomics, the results depend
 * on the problem size only. */
#ifndef CX_KERNELS_DEVICE_ATTENTION_CUH
#define CX_KERNELS_DEVICE_ATTENTION_CUH

#include "helpers.cuh"

// nvrtc-check: hot xca_gram_kernel xca_combine_kernel xca_softmax_kernel xca_tokens_kernel
// nvrtc-check: hot xca_attn_backward_kernel xca_temperature_kernel

#define XCA_EPS 1e-12
#define XCA_THREADS 256                       /* every XCA kernel's block */
#define XCA_TILE 32                           /* output channels per tile (a warp's lanes) */
#define XCA_ROWS (XCA_THREADS / XCA_TILE)     /* 8: warps per block */
#define XCA_STAGE 32                          /* reduction steps per shared-memory stage */
#define XCA_TOKEN_CHUNK 256                   /* tokens per gram partial */
#define XCA_TOKENS_PER_BLOCK 64               /* tokens per block of xca_tokens_kernel */
#define XCA_GRAM_PER_THREAD (XCA_TILE / XCA_ROWS)             /* 4 */
#define XCA_TOKENS_PER_THREAD (XCA_TOKENS_PER_BLOCK / XCA_ROWS) /* 8 */

/* max(norm, eps) in double, as the CPU's norm_floor */
static __device__ __forceinline__ double xca_floor(float norm) {
    return norm > XCA_EPS ? (double)norm : XCA_EPS;
}

static __device__ __forceinline__ double xca_warp_sum(double v) {
    for (int offset = 16; offset > 0; offset /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

/* The largest of the lanes' values; NaN never wins (as the CPU's `>` scan). */
static __device__ __forceinline__ double xca_warp_max(double v) {
    for (int offset = 16; offset > 0; offset /= 2) {
        double other = __shfl_xor_sync(0xffffffffu, v, offset);
        v = other > v ? other : v;
    }
    return v;
}

/* Gram partials. grid (tiles * tiles, chunks, batch * heads), block XCA_THREADS, with
 * tiles = ceil(d / XCA_TILE); block (ti, tj) of chunk c sums tokens [c*XCA_TOKEN_CHUNK,
 * ...) for outputs i in tile ti, j in tile tj. Thread (lane tx, warp ty) owns
 * j = tj*32 + tx and i = ti*32 + ty + 8r (r < 4).
 * partial [batch*heads, chunks, d*d + 2d]: G at i*d + j; with `norms`, also sum a[n, i]^2
 * at d*d + i (warp 0 of the blocks of tile column 0) and sum b[n, j]^2 at d*d + d + j
 * (warp 1 of tile row 0). The G entries do not depend on `norms`. */
__global__ void xca_gram_kernel(int tokens, int heads, int d, const float *a, int a_stride,
                                const float *b, int b_stride, int norms, float *partial) {
    __shared__ float a_tile[XCA_STAGE][XCA_TILE];
    __shared__ float b_tile[XCA_STAGE][XCA_TILE];
    const int tiles = (d + XCA_TILE - 1) / XCA_TILE;
    const int i0 = (int)(blockIdx.x / tiles) * XCA_TILE, j0 = (int)(blockIdx.x % tiles) * XCA_TILE;
    const int chunk = blockIdx.y, chunks = gridDim.y, item = blockIdx.z;
    const int tx = threadIdx.x % XCA_TILE, ty = threadIdx.x / XCA_TILE;
    const size_t batch_index = (size_t)(item / heads), head_offset = (size_t)(item % heads) * d;
    const float *a_rows = a + batch_index * tokens * (size_t)a_stride + head_offset;
    const float *b_rows = b + batch_index * tokens * (size_t)b_stride + head_offset;
    const int n_begin = chunk * XCA_TOKEN_CHUNK;
    const int n_end = min(tokens, n_begin + XCA_TOKEN_CHUNK);
    const bool a_norms = norms && j0 == 0 && ty == 0; /* uniform per warp */
    const bool b_norms = norms && i0 == 0 && ty == 1;
    float acc[XCA_GRAM_PER_THREAD];
    for (int r = 0; r < XCA_GRAM_PER_THREAD; r++)
        acc[r] = 0.0f;
    float sq = 0.0f;
    for (int n0 = n_begin; n0 < n_end; n0 += XCA_STAGE) {
        const int count = min(XCA_STAGE, n_end - n0);
        for (int t = ty; t < XCA_STAGE; t += XCA_ROWS) {
            float va = 0.0f, vb = 0.0f;
            if (t < count) {
                if (i0 + tx < d)
                    va = a_rows[(size_t)(n0 + t) * a_stride + i0 + tx];
                if (j0 + tx < d)
                    vb = b_rows[(size_t)(n0 + t) * b_stride + j0 + tx];
            }
            a_tile[t][tx] = va;
            b_tile[t][tx] = vb;
        }
        __syncthreads();
        for (int t = 0; t < count; t++) {
            const float bv = b_tile[t][tx];
            for (int r = 0; r < XCA_GRAM_PER_THREAD; r++)
                acc[r] = __fmaf_rn(a_tile[t][ty + XCA_ROWS * r], bv, acc[r]);
        }
        if (a_norms)
            for (int t = 0; t < count; t++)
                sq = __fmaf_rn(a_tile[t][tx], a_tile[t][tx], sq);
        if (b_norms)
            for (int t = 0; t < count; t++)
                sq = __fmaf_rn(b_tile[t][tx], b_tile[t][tx], sq);
        __syncthreads();
    }
    const size_t dd = (size_t)d * d;
    float *out = partial + ((size_t)item * chunks + chunk) * (dd + 2 * (size_t)d);
    const int j = j0 + tx;
    for (int r = 0; r < XCA_GRAM_PER_THREAD; r++) {
        const int i = i0 + ty + XCA_ROWS * r;
        if (i < d && j < d)
            out[(size_t)i * d + j] = acc[r];
    }
    if (a_norms && i0 + tx < d)
        out[dd + i0 + tx] = sq;
    if (b_norms && j < d)
        out[dd + d + j] = sq;
}

/* sums[item, e] = sum over chunks, in order, of partial[item, chunk, e] in double, for
 * e < width; both have `stride` entries per item (per chunk). Grid-stride over
 * items * width. */
__global__ void xca_combine_kernel(int items, int chunks, int width, int stride,
                                   const float *partial, double *sums) {
    CX_GRID_STRIDE(index, (size_t)items * width) {
        const size_t item = index / width, e = index % width;
        const float *p = partial + item * chunks * (size_t)stride + e;
        double sum = 0.0;
        for (int c = 0; c < chunks; c++)
            sum += p[(size_t)c * stride];
        sums[item * stride + e] = sum;
    }
}

/* The forward's d x d part: norms, cosines, temperature, softmax. grid (ceil(d / 8),
 * batch * heads), block XCA_THREADS: warp w handles row i = blockIdx.x * 8 + w, its lanes
 * the columns j = lane + 32k. sums [item, d*d + 2d]: q k^T, then the squared norms of q
 * and of k. saved [item, 2d + d*d]: ||q_i||, ||k_j||, A (ops.h). */
__global__ void xca_softmax_kernel(int heads, int d, const double *sums,
                                   const float *temperature, float *saved) {
    const int i = blockIdx.x * XCA_ROWS + threadIdx.x / 32, lane = threadIdx.x % 32;
    const int item = blockIdx.y;
    if (i >= d) /* uniform per warp; no barrier below */
        return;
    const size_t dd = (size_t)d * d;
    const double *dot = sums + (size_t)item * (dd + 2 * (size_t)d) + (size_t)i * d;
    const double *q_sq = sums + (size_t)item * (dd + 2 * (size_t)d) + dd, *k_sq = q_sq + d;
    float *q_norm = saved + (size_t)item * (dd + 2 * (size_t)d), *k_norm = q_norm + d;
    float *attn = k_norm + d + (size_t)i * d;
    const double t = temperature[item % heads];
    const float qn = (float)sqrt(q_sq[i]);
    const double mq = xca_floor(qn);
    double top = __longlong_as_double(0xfff0000000000000LL); /* -inf */
    for (int j = lane; j < d; j += 32) {
        const double logit = dot[j] / (mq * xca_floor((float)sqrt(k_sq[j]))) * t;
        top = logit > top ? logit : top;
    }
    top = xca_warp_max(top);
    double sum = 0.0;
    for (int j = lane; j < d; j += 32)
        sum += exp(dot[j] / (mq * xca_floor((float)sqrt(k_sq[j]))) * t - top);
    sum = xca_warp_sum(sum);
    for (int j = lane; j < d; j += 32)
        attn[j] = (float)(exp(dot[j] / (mq * xca_floor((float)sqrt(k_sq[j]))) * t - top) / sum);
    if (lane == 0) {
        q_norm[i] = qn;
        k_norm[i] = (float)sqrt(k_sq[i]);
    }
}

/* Token-side products. grid (ceil(tokens / 64), ceil(d / 32), batch * heads), block
 * XCA_THREADS; thread (lane tx, warp ty) owns channel o = blockIdx.y*32 + tx of tokens
 * n = blockIdx.x*64 + ty + 8k (k < 8):
 *   acc = coef ? -coef[item*d + o] * y[n, o] : 0;  acc += x[n, r] * m[item*m_item + o*m_o + r*m_r]
 *   for r = 0..d-1 in order;  out[n, o] = acc (accumulate: out[n, o] += acc).
 * x, y, out are token-major operands (row strides x_stride, y_stride, out_stride). */
__global__ void xca_tokens_kernel(int tokens, int heads, int d, const float *x, int x_stride,
                                  const float *m, int m_item, int m_o, int m_r, const float *coef,
                                  const float *y, int y_stride, float *out, int out_stride,
                                  int accumulate) {
    __shared__ float x_tile[XCA_TOKENS_PER_BLOCK][XCA_STAGE];
    __shared__ float m_tile[XCA_STAGE][XCA_TILE];
    const int tx = threadIdx.x % XCA_TILE, ty = threadIdx.x / XCA_TILE;
    const int n0 = blockIdx.x * XCA_TOKENS_PER_BLOCK, o0 = blockIdx.y * XCA_TILE;
    const int o = o0 + tx, item = blockIdx.z;
    const size_t batch_index = (size_t)(item / heads), head_offset = (size_t)(item % heads) * d;
    const float *x_rows = x + batch_index * tokens * (size_t)x_stride + head_offset;
    const float *mat = m + (size_t)item * m_item;
    float acc[XCA_TOKENS_PER_THREAD];
    for (int k = 0; k < XCA_TOKENS_PER_THREAD; k++) {
        const int n = n0 + ty + XCA_ROWS * k;
        acc[k] = 0.0f;
        if (coef && o < d && n < tokens)
            acc[k] = -coef[(size_t)item * d + o] *
                     y[(batch_index * tokens + n) * (size_t)y_stride + head_offset + o];
    }
    for (int r0 = 0; r0 < d; r0 += XCA_STAGE) {
        const int count = min(XCA_STAGE, d - r0);
        for (int t = ty; t < XCA_TOKENS_PER_BLOCK; t += XCA_ROWS) {
            const int n = n0 + t;
            x_tile[t][tx] = n < tokens && tx < count ? x_rows[(size_t)n * x_stride + r0 + tx] : 0.0f;
        }
        for (int r = ty; r < XCA_STAGE; r += XCA_ROWS)
            m_tile[r][tx] = r < count && o < d ? mat[(size_t)o * m_o + (size_t)(r0 + r) * m_r] : 0.0f;
        __syncthreads();
        for (int r = 0; r < count; r++) {
            const float mv = m_tile[r][tx];
            for (int k = 0; k < XCA_TOKENS_PER_THREAD; k++)
                acc[k] = __fmaf_rn(x_tile[ty + XCA_ROWS * k][r], mv, acc[k]);
        }
        __syncthreads();
    }
    if (o >= d)
        return;
    for (int k = 0; k < XCA_TOKENS_PER_THREAD; k++) {
        const int n = n0 + ty + XCA_ROWS * k;
        if (n >= tokens)
            continue;
        float *dst = out + (batch_index * tokens + n) * (size_t)out_stride + head_offset + o;
        *dst = accumulate ? *dst + acc[k] : acc[k];
    }
}

/* The backward's d x d part, one block (XCA_THREADS) per (batch, head); warp w handles
 * rows i = w, w + 8, ... With S = dot / (mq mk), dA the gram of dout and v:
 *   dL = A (dA - rowsum(A dA)), dS = t dL, P = dS / (mq mk) (float, p [item, d*d]),
 *   c_q[i] = sum_j dS S, c_k[j] = sum_i dS S, coef = c / m^2 (0 on the eps branch):
 *   coef [2, items, d] (q's, then k's), dt_part[item] = sum_ij dL S (when not null).
 * sums and d_attn are [item, d*d + 2d] doubles (xca_combine_kernel); the d*d entries of
 * sums are overwritten with dS S (c_k's terms, summed by column after the barrier). */
__global__ void xca_attn_backward_kernel(int heads, int d, double *sums, const double *d_attn,
                                         const float *saved, const float *temperature,
                                         float *p, float *coef, double *dt_part) {
    __shared__ double warp_dt[XCA_ROWS];
    const int item = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const size_t dd = (size_t)d * d, stride = dd + 2 * (size_t)d;
    double *dot = sums + (size_t)item * stride;
    const double *da = d_attn + (size_t)item * stride;
    const float *q_norm = saved + (size_t)item * stride, *k_norm = q_norm + d;
    const float *attn = k_norm + d;
    float *p_item = p + (size_t)item * dd, *coef_q = coef + (size_t)item * d;
    float *coef_k = coef_q + (size_t)gridDim.x * d;
    const double t = temperature[item % heads];
    double dt = 0.0;
    for (int i = warp; i < d; i += XCA_ROWS) {
        const double mq = xca_floor(q_norm[i]);
        const float *a_i = attn + (size_t)i * d;
        const double *da_i = da + (size_t)i * d;
        double *dot_i = dot + (size_t)i * d;
        double row_dot = 0.0;
        for (int j = lane; j < d; j += 32)
            row_dot += (double)a_i[j] * da_i[j];
        row_dot = xca_warp_sum(row_dot);
        double c_q = 0.0;
        for (int j = lane; j < d; j += 32) {
            const double denom = mq * xca_floor(k_norm[j]);
            const double s = dot_i[j] / denom;
            const double d_logit = a_i[j] * (da_i[j] - row_dot);
            const double d_s = d_logit * t;
            dt += d_logit * s;
            c_q += d_s * s;
            dot_i[j] = d_s * s;
            p_item[(size_t)i * d + j] = (float)(d_s / denom);
        }
        c_q = xca_warp_sum(c_q);
        if (lane == 0)
            coef_q[i] = q_norm[i] >= XCA_EPS ? (float)(c_q / (mq * mq)) : 0.0f;
    }
    dt = xca_warp_sum(dt);
    if (lane == 0)
        warp_dt[warp] = dt;
    __syncthreads(); /* every row's dS S is written (global memory, this block) */
    for (int j = threadIdx.x; j < d; j += XCA_THREADS) {
        double c_k = 0.0;
        for (int i = 0; i < d; i++)
            c_k += dot[(size_t)i * d + j];
        const double mk = xca_floor(k_norm[j]);
        coef_k[j] = k_norm[j] >= XCA_EPS ? (float)(c_k / (mk * mk)) : 0.0f;
    }
    if (threadIdx.x == 0 && dt_part) {
        double total = 0.0;
        for (int w = 0; w < XCA_ROWS; w++)
            total += warp_dt[w];
        dt_part[item] = total;
    }
}

/* dtemperature[h] += sum over b, in order, of dt_part[b*heads + h]; one thread per head. */
__global__ void xca_temperature_kernel(int batch, int heads, const double *dt_part,
                                       float *dtemperature) {
    const int h = blockIdx.x * blockDim.x + threadIdx.x;
    if (h >= heads)
        return;
    double sum = 0.0;
    for (int b = 0; b < batch; b++)
        sum += dt_part[(size_t)b * heads + h];
    dtemperature[h] += (float)sum;
}

#endif
