/* Fixed-order reductions for parameter gradients (bias, norm weight and bias); see
 * common.cuh. Two stages, both with an order set by the problem size only:
 *   1. each block reduces one fixed chunk of the data and writes a partial sum;
 *   2. one thread per output adds its partials in chunk order and accumulates into
 *      the output.
 * No atomics, so the result is the same on every run. */
#include "common.cuh"

/* Column sums: rows are split into n_chunks chunks of rows_per_chunk. */
#define COLUMN_BLOCK 128
#define COLUMN_MAX_CHUNKS 512
#define COLUMN_MIN_ROWS_PER_CHUNK 32
/* Channel sums: each (batch, channel) plane is split into chunks of CHANNEL_CHUNK pixels. */
#define CHANNEL_BLOCK 256
#define CHANNEL_CHUNK 4096

/* partial_dy, partial_xhat [n_chunks, cols]; saved [2, rows] (mean, rstd) or NULL */
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

void cu_column_sums(cu_state *st, int rows, int cols, const float *dy, const float *x,
                    const float *saved, float *sum_dy, float *sum_dy_xhat) {
    if (rows <= 0 || cols <= 0 || (!sum_dy && !sum_dy_xhat))
        return;
    int rows_per_chunk = (int)cu_ceil_div((size_t)rows, COLUMN_MAX_CHUNKS);
    if (rows_per_chunk < COLUMN_MIN_ROWS_PER_CHUNK)
        rows_per_chunk = COLUMN_MIN_ROWS_PER_CHUNK;
    int n_chunks = (int)cu_ceil_div((size_t)rows, (size_t)rows_per_chunk);
    bool with_xhat = saved != NULL && sum_dy_xhat != NULL;
    size_t n_partial = (size_t)n_chunks * cols;
    float *partial_dy = cu_scratch(st, 0, n_partial);
    float *partial_xhat = with_xhat ? cu_scratch(st, 1, n_partial) : NULL;
    if (!partial_dy || (with_xhat && !partial_xhat))
        return;
    dim3 grid((unsigned)cu_ceil_div((size_t)cols, COLUMN_BLOCK), (unsigned)n_chunks);
    if (with_xhat)
        column_partials_kernel<true><<<grid, COLUMN_BLOCK, 0, st->stream>>>(
            rows, cols, rows_per_chunk, dy, x, saved, partial_dy, partial_xhat);
    else
        column_partials_kernel<false><<<grid, COLUMN_BLOCK, 0, st->stream>>>(
            rows, cols, rows_per_chunk, dy, NULL, NULL, partial_dy, NULL);
    if (!cu_ok_launch(st, "column sums"))
        return;
    unsigned blocks = (unsigned)cu_ceil_div((size_t)cols, COLUMN_BLOCK);
    if (sum_dy)
        combine_partials_kernel<<<blocks, COLUMN_BLOCK, 0, st->stream>>>(
            cols, n_chunks, (size_t)cols, 1, partial_dy, sum_dy);
    if (with_xhat)
        combine_partials_kernel<<<blocks, COLUMN_BLOCK, 0, st->stream>>>(
            cols, n_chunks, (size_t)cols, 1, partial_xhat, sum_dy_xhat);
    cu_ok_launch(st, "column sums (combine)");
}

/* Block-wide sum in a fixed tree order; every thread must call it. Returns the total in
 * thread 0. */
__device__ float block_sum(float value, float *shared) {
    shared[threadIdx.x] = value;
    __syncthreads();
    for (int half = CHANNEL_BLOCK / 2; half > 0; half /= 2) {
        if (threadIdx.x < half)
            shared[threadIdx.x] += shared[threadIdx.x + half];
        __syncthreads();
    }
    float total = shared[0];
    __syncthreads(); /* shared may be reused right after */
    return total;
}

/* grid (n_pchunks, channels, batch); partials [channels, batch, n_pchunks] */
template <bool WITH_XHAT>
__global__ void channel_partials_kernel(int batch, int channels, int hw, const float *dy,
                                        const float *x, const float *saved, float *partial_dy,
                                        float *partial_xhat) {
    __shared__ float shared[CHANNEL_BLOCK];
    int chunk = blockIdx.x, channel = blockIdx.y, b = blockIdx.z;
    int n_pchunks = gridDim.x;
    size_t plane = ((size_t)b * channels + channel) * hw;
    const float *mean = WITH_XHAT ? saved + (size_t)b * hw : NULL;
    const float *rstd = WITH_XHAT ? saved + (size_t)batch * hw + (size_t)b * hw : NULL;
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

void cu_channel_sums(cu_state *st, int batch, int channels, int hw, const float *dy,
                     const float *x, const float *saved, float *sum_dy, float *sum_dy_xhat) {
    if (batch <= 0 || channels <= 0 || (!sum_dy && !sum_dy_xhat))
        return;
    if (hw <= 0)
        return;
    if (batch > 65535 || channels > 65535) {
        cu_record(st, CX_EINVAL, "channel sums: batch %d or channels %d exceeds 65535", batch,
                  channels);
        return;
    }
    int n_pchunks = (int)cu_ceil_div((size_t)hw, CHANNEL_CHUNK);
    bool with_xhat = saved != NULL && sum_dy_xhat != NULL;
    size_t n_partial = (size_t)channels * batch * n_pchunks;
    float *partial_dy = cu_scratch(st, 0, n_partial);
    float *partial_xhat = with_xhat ? cu_scratch(st, 1, n_partial) : NULL;
    if (!partial_dy || (with_xhat && !partial_xhat))
        return;
    dim3 grid((unsigned)n_pchunks, (unsigned)channels, (unsigned)batch);
    if (with_xhat)
        channel_partials_kernel<true><<<grid, CHANNEL_BLOCK, 0, st->stream>>>(
            batch, channels, hw, dy, x, saved, partial_dy, partial_xhat);
    else
        channel_partials_kernel<false><<<grid, CHANNEL_BLOCK, 0, st->stream>>>(
            batch, channels, hw, dy, NULL, NULL, partial_dy, NULL);
    if (!cu_ok_launch(st, "channel sums"))
        return;
    int per_channel = batch * n_pchunks;
    unsigned blocks = (unsigned)cu_ceil_div((size_t)channels, COLUMN_BLOCK);
    if (sum_dy)
        combine_partials_kernel<<<blocks, COLUMN_BLOCK, 0, st->stream>>>(
            channels, per_channel, 1, (size_t)per_channel, partial_dy, sum_dy);
    if (with_xhat)
        combine_partials_kernel<<<blocks, COLUMN_BLOCK, 0, st->stream>>>(
            channels, per_channel, 1, (size_t)per_channel, partial_xhat, sum_dy_xhat);
    cu_ok_launch(st, "channel sums (combine)");
}
