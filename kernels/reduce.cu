/* Fixed-order reductions for parameter gradients (bias, norm weight and bias), host side;
 * see common.cuh. The kernels and their block sizes are in device/reduce.cuh. Two
 * stages, both with an order set by the problem size only:
 *   1. each block reduces one fixed chunk of the data and writes a partial sum;
 *   2. one thread per output adds its partials in chunk order and accumulates into
 *      the output.
 * No atomics, so the result is the same on every run. */
#include "common.cuh"
#include "device/reduce.cuh"

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
        CX_LAUNCH(column_partials_kernel<true>, grid, COLUMN_BLOCK, 0, st->stream)(
            rows, cols, rows_per_chunk, dy, x, saved, partial_dy, partial_xhat);
    else
        CX_LAUNCH(column_partials_kernel<false>, grid, COLUMN_BLOCK, 0, st->stream)(
            rows, cols, rows_per_chunk, dy, NULL, NULL, partial_dy, NULL);
    if (!cu_ok_launch(st, "column sums"))
        return;
    unsigned blocks = (unsigned)cu_ceil_div((size_t)cols, COLUMN_BLOCK);
    if (sum_dy)
        CX_LAUNCH(combine_partials_kernel, blocks, COLUMN_BLOCK, 0, st->stream)(
            cols, n_chunks, (size_t)cols, 1, partial_dy, sum_dy);
    if (with_xhat)
        CX_LAUNCH(combine_partials_kernel, blocks, COLUMN_BLOCK, 0, st->stream)(
            cols, n_chunks, (size_t)cols, 1, partial_xhat, sum_dy_xhat);
    cu_ok_launch(st, "column sums (combine)");
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
        CX_LAUNCH(channel_partials_kernel<true>, grid, CHANNEL_BLOCK, 0, st->stream)(
            batch, channels, hw, dy, x, saved, partial_dy, partial_xhat);
    else
        CX_LAUNCH(channel_partials_kernel<false>, grid, CHANNEL_BLOCK, 0, st->stream)(
            batch, channels, hw, dy, NULL, NULL, partial_dy, NULL);
    if (!cu_ok_launch(st, "channel sums"))
        return;
    int per_channel = batch * n_pchunks;
    unsigned blocks = (unsigned)cu_ceil_div((size_t)channels, COLUMN_BLOCK);
    if (sum_dy)
        CX_LAUNCH(combine_partials_kernel, blocks, COLUMN_BLOCK, 0, st->stream)(
            channels, per_channel, 1, (size_t)per_channel, partial_dy, sum_dy);
    if (with_xhat)
        CX_LAUNCH(combine_partials_kernel, blocks, COLUMN_BLOCK, 0, st->stream)(
            channels, per_channel, 1, (size_t)per_channel, partial_xhat, sum_dy_xhat);
    cu_ok_launch(st, "channel sums (combine)");
}
