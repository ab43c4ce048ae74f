/* Exponential moving average of the weights with warmup (the twin's interpretation 14):
 * after optimizer step t (counted over the whole run), d = min(decay, (1 + t) / (10 + t))
 * and ema = d * ema + (1 - d) * w over every parameter, backbone included. The float32
 * arithmetic is torch's shadow.mul_(d).add_(w, alpha=1-d) on an AVX2 CPU: the product
 * ema * f32(d) rounded, then one fused multiply-add. */
#include "optim.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define CX_AVX2 __attribute__((target("avx2,fma")))

double cx_ema_decay_at(double decay, int64_t t) {
    double warm = (double)(1 + t) / (double)(10 + t);
    return decay < warm ? decay : warm;
}

static void copy_piece(void *ctx, int param, size_t begin, size_t end) {
    const float *const *io = ctx;
    memcpy((float *)io[1] + begin, io[0] + begin, (end - begin) * sizeof(float));
}

void cx_ema_init(const cx_param_table *table, const float *values, float *ema) {
    const float *io[2] = {values, ema};
    int64_t n_chunks = cx_optim_n_chunks(table);
    for (int64_t c = 0; c < n_chunks; c++)
        cx_optim_chunk_pieces(table, NULL, c, copy_piece, (void *)io);
}

typedef struct {
    const cx_param_table *table;
    const float *values;
    float *ema;
    float keep, take; /* f32(d), f32(1 - d) */
    int avx2;
} ema_job;

static void ema_span_scalar(float keep, float take, size_t n, const float *w, float *e) {
    for (size_t j = 0; j < n; j++)
        e[j] = fmaf(w[j], take, e[j] * keep);
}

CX_AVX2 static void ema_span_avx2(float keep, float take, size_t n, const float *w, float *e) {
    const __m256 vkeep = _mm256_set1_ps(keep), vtake = _mm256_set1_ps(take);
    size_t j = 0;
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(e + j, _mm256_fmadd_ps(_mm256_loadu_ps(w + j), vtake,
                                                _mm256_mul_ps(_mm256_loadu_ps(e + j), vkeep)));
    ema_span_scalar(keep, take, n - j, w + j, e + j);
}

static void ema_piece(void *ctx, int param, size_t begin, size_t end) {
    const ema_job *job = ctx;
    if (job->avx2)
        ema_span_avx2(job->keep, job->take, end - begin, job->values + begin, job->ema + begin);
    else
        ema_span_scalar(job->keep, job->take, end - begin, job->values + begin, job->ema + begin);
}

static void ema_chunks(void *ctx, int64_t begin, int64_t end) {
    const ema_job *job = ctx;
    for (int64_t chunk = begin; chunk < end; chunk++)
        cx_optim_chunk_pieces(job->table, NULL, chunk, ema_piece, ctx);
}

void cx_ema_update(const cx_param_table *table, double decay, int64_t t,
                   const float *values, float *ema, double *decay_used) {
    double d = cx_ema_decay_at(decay, t);
    ema_job job = {table, values, ema, (float)d, (float)(1.0 - d),
                   __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")};
    cx_parallel_for(cx_optim_n_chunks(table), 1, ema_chunks, &job);
    if (decay_used)
        *decay_used = d;
}
