/* The optimizer step on the device, host side: the C ABI of ops/cuda_optim.h over the
 * kernels of device/optim.cuh (which describes the three launches and their arithmetic).
 * Launches go through CX_LAUNCH (launch.cuh), so this file builds unchanged with nvcc and,
 * as C++ with -DCX_EMU, against the CUDA emulator (tests/test_emu_optim.py). It needs
 * nothing of the backend state (common.cuh): no cuBLAS, no cuDNN, no scratch.
 *
 * Workspace layout (each part 256-byte aligned): partials double [n_chunks], then one
 * optim_result, then optim_coef [count]. */
#include <cuda_runtime.h>

#include <math.h>
#include <stddef.h>

#include "device/optim.cuh"
#include "launch.cuh"
#include "ops/cuda_optim.h"

/* The ABI's structs and the device code's are the same bytes. */
static_assert(sizeof(cu_optim_param) == sizeof(optim_param), "cu_optim_param layout");
static_assert(offsetof(cu_optim_param, offset) == offsetof(optim_param, offset) &&
                  offsetof(cu_optim_param, numel) == offsetof(optim_param, numel) &&
                  offsetof(cu_optim_param, group) == offsetof(optim_param, group) &&
                  offsetof(cu_optim_param, decay) == offsetof(optim_param, decay),
              "cu_optim_param layout");
static_assert(sizeof(int64_t) == sizeof(long long), "step counts are long long on the device");
static_assert(sizeof(cu_optim_result) == sizeof(optim_result) &&
                  offsetof(cu_optim_result, norm) == offsetof(optim_result, norm) &&
                  offsetof(cu_optim_result, clip_scale) == offsetof(optim_result, clip_scale) &&
                  offsetof(cu_optim_result, applied) == offsetof(optim_result, applied),
              "cu_optim_result layout");
static_assert((OPTIM_BLOCK & (OPTIM_BLOCK - 1)) == 0, "OPTIM_BLOCK is a power of two");

static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

static size_t n_chunks_of(size_t total) { return (total + OPTIM_CHUNK - 1) / OPTIM_CHUNK; }

/* Offsets of the workspace's parts. */
static size_t result_offset(size_t total) { return align256(n_chunks_of(total) * sizeof(double)); }
static size_t coefs_offset(size_t total) { return align256(result_offset(total) + sizeof(optim_result)); }

extern "C" size_t cu_optim_workspace_bytes(int count, size_t total) {
    return coefs_offset(total) + (size_t)(count > 0 ? count : 0) * sizeof(optim_coef);
}

static bool buffers_ok(const cu_optim_buffers *b) {
    return b && b->count >= 0 && b->workspace && (b->count == 0 || (b->params && b->steps)) &&
           (b->total == 0 || (b->values && b->grads && b->exp_avg && b->exp_avg_sq && b->ema)) &&
           n_chunks_of(b->total) <= 0x7fffffffu;
}

/* cx_adamw_step's checks, and a usable EMA decay. */
static bool config_ok(const cu_optim_config *c) {
    if (!c || !(c->beta1 >= 0.0 && c->beta1 < 1.0) || !(c->beta2 >= 0.0 && c->beta2 < 1.0) ||
        !(c->eps > 0.0) || !(c->weight_decay >= 0.0) || isinf(c->weight_decay) ||
        !(c->ema_decay >= 0.0 && c->ema_decay <= 1.0) || isnan(c->max_norm))
        return false;
    for (int g = 0; g < 2; g++)
        if (!(c->lr[g] >= 0.0) || isinf(c->lr[g]))
            return false;
    return true;
}

extern "C" int cu_optim_step(const cu_optim_buffers *b, const unsigned char *mask,
                             const cu_optim_config *c, void *stream) {
    if (!buffers_ok(b) || !config_ok(c))
        return (int)cudaErrorInvalidValue;
    cudaStream_t s = (cudaStream_t)stream;
    /* the scalars exactly as optim.c and ema.c round them (double, then float32) */
    optim_hyper h;
    h.lr[0] = c->lr[0];
    h.lr[1] = c->lr[1];
    h.weight_decay = c->weight_decay;
    h.beta1 = c->beta1;
    h.beta2 = c->beta2;
    h.max_norm = c->max_norm;
    h.beta1_f = (float)c->beta1;
    h.one_minus_beta1 = (float)(1.0 - c->beta1);
    h.beta2_f = (float)c->beta2;
    h.one_minus_beta2 = (float)(1.0 - c->beta2);
    h.eps = (float)c->eps;
    h.ema_keep = (float)c->ema_decay;
    h.ema_take = (float)(1.0 - c->ema_decay);

    const optim_param *params = (const optim_param *)b->params;
    long long *steps = (long long *)b->steps;
    char *ws = (char *)b->workspace;
    double *partials = (double *)ws;
    optim_result *result = (optim_result *)(ws + result_offset(b->total));
    optim_coef *coefs = (optim_coef *)(ws + coefs_offset(b->total));
    int n_chunks = (int)n_chunks_of(b->total);
    cudaError_t err;
    if (n_chunks > 0) {
        CX_LAUNCH(optim_norm_partials_kernel, n_chunks, OPTIM_BLOCK, 0, s)(
            b->count, params, mask, b->grads, partials);
        if ((err = cudaGetLastError()) != cudaSuccess)
            return (int)err;
    }
    CX_LAUNCH(optim_prepare_kernel, 1, OPTIM_BLOCK, 0, s)(n_chunks, partials, b->count, params,
                                                         mask, h, steps, coefs, result);
    if ((err = cudaGetLastError()) != cudaSuccess)
        return (int)err;
    if (n_chunks > 0) {
        CX_LAUNCH(optim_update_kernel, n_chunks, OPTIM_BLOCK, 0, s)(
            b->count, params, coefs, result, h, b->values, b->grads, b->exp_avg, b->exp_avg_sq,
            b->ema);
        if ((err = cudaGetLastError()) != cudaSuccess)
            return (int)err;
    }
    return (int)cudaSuccess;
}

extern "C" int cu_optim_reset(const cu_optim_buffers *b, void *stream) {
    if (!buffers_ok(b))
        return (int)cudaErrorInvalidValue;
    cudaStream_t s = (cudaStream_t)stream;
    cudaError_t err = cudaSuccess;
    if (b->total > 0) {
        err = cudaMemsetAsync(b->exp_avg, 0, b->total * sizeof(float), s);
        if (err == cudaSuccess)
            err = cudaMemsetAsync(b->exp_avg_sq, 0, b->total * sizeof(float), s);
    }
    if (err == cudaSuccess && b->count > 0)
        err = cudaMemsetAsync(b->steps, 0, (size_t)b->count * sizeof(int64_t), s);
    return (int)err;
}

extern "C" int cu_optim_read_result(const cu_optim_buffers *b, cu_optim_result *out,
                                    void *stream) {
    if (!buffers_ok(b) || !out)
        return (int)cudaErrorInvalidValue;
    cudaStream_t s = (cudaStream_t)stream;
    cudaError_t err = cudaMemcpyAsync(out, (char *)b->workspace + result_offset(b->total),
                                      sizeof *out, cudaMemcpyDeviceToHost, s);
    if (err == cudaSuccess)
        err = cudaStreamSynchronize(s);
    return (int)err;
}
