/* Fixed-order reduction kernels (device code; launched by kernels/reduce.cu, which
 * describes the two stages). No atomics: the order depends on the problem size only.
 * saved [2, rows] (or [2, batch*hw]) holds mean then rstd; see kernels/norm.cu. */
#ifndef CX_KERNELS_DEVICE_REDUCE_CUH
#define CX_KERNELS_DEVICE_REDUCE_CUH

#include "helpers.cuh"

// nvrtc-check: instantiate column_partials_kernel<true> column_partials_kernel<false>
// nvrtc-check: instantiate channel_partials_kernel<true> channel_partials_kernel<false>
// nvrtc-check: hot column_partials_kernel channel_partials_kernel combine_partials_kernel

/* Column sums: rows are split into n_chunks chunks of rows_per_chunk. */
#define COLUMN_BLOCK 128
#define COLUMN_MAX_CHUNKS 512
#define COLUMN_MIN_ROWS_PER_CHUNK 32
/* Channel sums: each (batch, channel) plane is split into chunks of CHANNEL_CHUNK pixels. */
#define CHANNEL_BLOCK 256
#define CHANNEL_CHUNK 4096

/* grid (ceil(cols / COLUMN_BLOCK), n_chunks), block COLUMN_BLOCK;
 * partial_dy, partial_xhat [n_chunks, cols]; saved [2, rows] (mean, rstd), used only
 * WITH_XHAT */
template <bool WITH_XHAT>
__global__ void column_partials_kernel(int rows, int cols, int rows_per_chunk, const float *dy,
                                       const float *x, const float *saved, float *partial_dy,
                                       float *partial_xhat) {
    int col = blockIdx.x * COLUMN_BLOCK + threadIdx.x;
    int chunk = blockIdx.y;
    if (col >= cols)
        return;
    int row_begin = chunk * rows_per_chunk;
    int row_end = min(rows, row_begin + rows_per_chunk);
    float sum_dy = 0.0f, sum_xhat = 0.0f;
    for (int row = row_begin; row < row_end; row++) {
        size_t at = (size_t)row * cols + col;
        float g = dy[at];
        sum_dy += g;
        if (WITH_XHAT)
            sum_xhat += g * (x[at] - saved[row]) * saved[rows + row];
    }
    partial_dy[(size_t)chunk * cols + col] = sum_dy;
    if (WITH_XHAT)
        partial_xhat[(size_t)chunk * cols + col] = sum_xhat;
}

/* out[i] += sum over k of partial[k * stride + i * step] for k < n_partials, in order:
 * column sums use (stride = cols, step = 1), channel sums (stride = 1, step = n_partials). */
__global__ void combine_partials_kernel(int n_out, int n_partials, size_t stride, size_t step,
                                        const float *partial, float *out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_out)
        return;
    float sum = 0.0f;
    for (int k = 0; k < n_partials; k++)
        sum += partial[(size_t)k * stride + (size_t)i * step];
    out[i] += sum;
}

/* Block-wide sum over CHANNEL_BLOCK threads in a fixed tree order; every thread must call
 * it. Returns the total in thread 0. shared [CHANNEL_BLOCK]. */
static __device__ float block_sum(float value, float *shared) {
    shared[threadIdx.x] = value;
    __syncthreads();
    for (int half = CHANNEL_BLOCK / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half)
            shared[threadIdx.x] += shared[threadIdx.x + half];
        __syncthreads();
    }
    float total = shared[0];
    __syncthreads(); /* shared may be reused right after */
    return total;
}

/* grid (n_pchunks, channels, batch), block CHANNEL_BLOCK; dy, x [batch, channels, hw];
 * partials [channels, batch, n_pchunks]; saved [2, batch*hw], used only WITH_XHAT */
template <bool WITH_XHAT>
__global__ void channel_partials_kernel(int batch, int channels, int hw, const float *dy,
                                        const float *x, const float *saved, float *partial_dy,
                                        float *partial_xhat) {
    __shared__ float shared[CHANNEL_BLOCK];
    int chunk = blockIdx.x, channel = blockIdx.y, b = blockIdx.z;
    int n_pchunks = gridDim.x;
    size_t plane = ((size_t)b * channels + channel) * hw;
    const float *mean = WITH_XHAT ? saved + (size_t)b * hw : nullptr;
    const float *rstd = WITH_XHAT ? saved + (size_t)batch * hw + (size_t)b * hw : nullptr;
    int p_end = min(hw, (chunk + 1) * CHANNEL_CHUNK);
    float sum_dy = 0.0f, sum_xhat = 0.0f;
    for (int p = chunk * CHANNEL_CHUNK + threadIdx.x; p < p_end; p += CHANNEL_BLOCK) {
        float g = dy[plane + p];
        sum_dy += g;
        if (WITH_XHAT)
            sum_xhat += g * (x[plane + p] - mean[p]) * rstd[p];
    }
    size_t out = ((size_t)channel * batch + b) * n_pchunks + chunk;
    float total_dy = block_sum(sum_dy, shared);
    if (threadIdx.x == 0)
        partial_dy[out] = total_dy;
    if (WITH_XHAT) {
        float total_xhat = block_sum(sum_xhat, shared);
        if (threadIdx.x == 0)
            partial_xhat[out] = total_xhat;
    }
}

#endif
