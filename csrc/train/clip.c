/* Global gradient norm, clipping and scaling over the masked parameters (see optim.h).
 * The norm is a sum over the buffer in double, split into fixed chunks of
 * CX_REDUCE_CHUNK floats (by position in the buffer, never by thread), each summed in a
 * fixed order, then the chunk partials added in chunk order: the same bits for any
 * thread count. */
#include "optim.h"

#include <math.h>

typedef struct {
    const cx_param_table *table;
    const unsigned char *mask;
    const float *grads;
    double *partials; /* [n_chunks] */
} norm_job;

typedef struct {
    const float *grads;
    double sum;
} piece_sum;

static void sum_squares_piece(void *ctx, int param, size_t begin, size_t end) {
    piece_sum *acc = ctx;
    const float *g = acc->grads;
    /* four running sums (index mod 4 from the piece's start), then added pairwise */
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    size_t j = begin;
    for (; j + 4 <= end; j += 4) {
        s0 += (double)g[j] * (double)g[j];
        s1 += (double)g[j + 1] * (double)g[j + 1];
        s2 += (double)g[j + 2] * (double)g[j + 2];
        s3 += (double)g[j + 3] * (double)g[j + 3];
    }
    for (; j < end; j++)
        s0 += (double)g[j] * (double)g[j];
    acc->sum += (s0 + s1) + (s2 + s3);
}

static void norm_chunks(void *ctx, int64_t begin, int64_t end) {
    norm_job *job = ctx;
    for (int64_t chunk = begin; chunk < end; chunk++) {
        piece_sum acc = {job->grads, 0.0};
        cx_optim_chunk_pieces(job->table, job->mask, chunk, sum_squares_piece, &acc);
        job->partials[chunk] = acc.sum;
    }
}

cx_status cx_grad_norm(const cx_param_table *table, const unsigned char *mask,
                       const float *grads, double *norm) {
    int64_t n_chunks = cx_optim_n_chunks(table);
    if (n_chunks == 0) {
        *norm = 0.0;
        return CX_OK;
    }
    /* doubles in the caller's scratch (2 floats each; scratch is 64-byte aligned) */
    double *partials = (double *)cx_scratch(0, (size_t)n_chunks * 2);
    if (!partials)
        return cx_fail(CX_ENOMEM, "gradient norm: no memory for %lld partial sums",
                       (long long)n_chunks);
    norm_job job = {table, mask, grads, partials};
    cx_parallel_for(n_chunks, 1, norm_chunks, &job);
    double total = 0.0;
    for (int64_t c = 0; c < n_chunks; c++)
        total += partials[c];
    *norm = sqrt(total);
    return CX_OK;
}

double cx_clip_factor(double norm, double max_norm) {
    double factor = max_norm / (norm + 1e-6);
    return factor < 1.0 ? factor : 1.0;
}

typedef struct {
    const cx_param_table *table;
    const unsigned char *mask;
    float *grads;
    float scale;
} scale_job;

static void scale_piece(void *ctx, int param, size_t begin, size_t end) {
    const scale_job *job = ctx;
    float *g = job->grads;
    for (size_t j = begin; j < end; j++)
        g[j] *= job->scale;
}

static void scale_chunks(void *ctx, int64_t begin, int64_t end) {
    const scale_job *job = ctx;
    for (int64_t chunk = begin; chunk < end; chunk++)
        cx_optim_chunk_pieces(job->table, job->mask, chunk, scale_piece, ctx);
}

void cx_grads_scale(const cx_param_table *table, const unsigned char *mask, float *grads,
                    float scale) {
    scale_job job = {table, mask, grads, scale};
    cx_parallel_for(cx_optim_n_chunks(table), 1, scale_chunks, &job);
}

cx_status cx_clip_grad_norm(const cx_param_table *table, const unsigned char *mask,
                            float *grads, double max_norm, double *norm) {
    CX_TRY(cx_grad_norm(table, mask, grads, norm));
    if (!(max_norm > 0.0) || !isfinite(*norm))
        return CX_OK;
    double factor = cx_clip_factor(*norm, max_norm);
    if (factor < 1.0)
        cx_grads_scale(table, mask, grads, (float)factor);
    return CX_OK;
}
