/* Structure-loss kernels (device code; launched by kernels/loss.cu, which documents the
 * math, the saved layout and the launch sequence). Images are planes [h, w] of one
 * float per pixel; per-pixel work is in double as in csrc/cpu/loss.c, and every sum has
 * a fixed order (a thread's pixels in increasing order, a fixed tree per block, chunks
 * in order): no atomics. */
#ifndef CX_KERNELS_DEVICE_LOSS_CUH
#define CX_KERNELS_DEVICE_LOSS_CUH

#include "helpers.cuh"

// nvrtc-check: hot loss_box_rows_kernel loss_forward_partials_kernel loss_finish_kernel
// nvrtc-check: hot loss_backward_kernel

#define LOSS_BLOCK 256
#define LOSS_CHUNK 4096 /* pixels per block of the forward sums */
#define LOSS_WINDOW 31  /* the weight map's average pool: 31 x 31, stride 1 */
#define LOSS_PAD 15     /* zero padding, counted in the divisor (count_include_pad) */

/* Window of the output at `o` along an axis of `in` pixels: inputs [lo, hi) and the
 * divisor factor (padding counted, as cpu/pool.c's window_count). */
static __device__ __forceinline__ void loss_window(int o, int in, int *lo, int *hi,
                                                   int *count) {
    const int start = o - LOSS_PAD;
    *lo = max(start, 0);
    *hi = max(min(start + LOSS_WINDOW, in), *lo);
    *count = min(start + LOSS_WINDOW, in + LOSS_PAD) - start;
}

static __device__ __forceinline__ double loss_sigmoid(double x) {
    return x >= 0.0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

/* rows[b, r, c] = sum of target[b, r, j] over the window of column c, in double, j in
 * increasing order. Grid-stride over n = batch * h * w. */
__global__ void loss_box_rows_kernel(size_t n, int w, const float *target, double *rows) {
    CX_GRID_STRIDE(index, n) {
        const int c = (int)(index % (size_t)w);
        const float *row = target + (index - (size_t)c);
        int lo, hi, count;
        loss_window(c, w, &lo, &hi, &count);
        double sum = 0.0;
        for (int j = lo; j < hi; j++)
            sum += row[j];
        rows[index] = sum;
    }
}

/* Block sum of LOSS_BLOCK doubles in a fixed tree; the total is in shared[0] after it.
 * Every thread calls it. */
static __device__ void loss_block_sum(double *shared) {
    for (int half = LOSS_BLOCK / 2; half > 0; half /= 2) {
        __syncthreads();
        if ((int)threadIdx.x < half)
            shared[threadIdx.x] += shared[threadIdx.x + half];
    }
    __syncthreads();
}

/* grid (chunks, batch), block LOSS_BLOCK: chunk c of image b covers pixels
 * [c*LOSS_CHUNK, ...). Finishes the box filter (the column sums of `rows`), writes the
 * weight map 1 + 5 |avgpool - target| and the chunk's four double sums
 * partials[b, c, 4] = (sum w, sum w bce, sum w p y, sum w (p + y)). */
__global__ void loss_forward_partials_kernel(int h, int w, const float *logits,
                                             const float *target, const double *rows,
                                             float *weight, double *partials) {
    __shared__ double shared[LOSS_BLOCK];
    const size_t plane = (size_t)h * w, image = blockIdx.y;
    const size_t begin = (size_t)blockIdx.x * LOSS_CHUNK;
    const size_t end = min(plane, begin + LOSS_CHUNK);
    const float *x = logits + image * plane, *y = target + image * plane;
    const double *box = rows + image * plane;
    double sums[4] = {0.0, 0.0, 0.0, 0.0};
    for (size_t i = begin + threadIdx.x; i < end; i += LOSS_BLOCK) {
        const int r = (int)(i / (size_t)w), c = (int)(i % (size_t)w);
        int lo_h, hi_h, count_h, lo_w, hi_w, count_w;
        loss_window(r, h, &lo_h, &hi_h, &count_h);
        loss_window(c, w, &lo_w, &hi_w, &count_w);
        double window = 0.0;
        for (int k = lo_h; k < hi_h; k++)
            window += box[(size_t)k * w + c];
        const float pooled = (float)(window * ((1.0 / count_h) * (1.0 / count_w)));
        /* float operations rounded one by one, as the CPU's 1.0f + 5.0f * fabsf(...) */
        const float wf = __fadd_rn(1.0f, __fmul_rn(5.0f, fabsf(pooled - y[i])));
        weight[image * plane + i] = wf;
        const double wgt = wf, xi = x[i], yi = y[i];
        const double p = loss_sigmoid(xi);
        const double bce = (xi > 0.0 ? xi : 0.0) - xi * yi + log1p(exp(-fabs(xi)));
        sums[0] += wgt;
        sums[1] += wgt * bce;
        sums[2] += wgt * p * yi;
        sums[3] += wgt * (p + yi);
    }
    double *out = partials + (image * gridDim.x + blockIdx.x) * 4;
    for (int k = 0; k < 4; k++) {
        shared[threadIdx.x] = sums[k];
        loss_block_sum(shared);
        if (threadIdx.x == 0)
            out[k] = shared[0];
        __syncthreads(); /* shared[0] is read before the next sum overwrites it */
    }
}

/* One thread per image: the chunk partials in chunk order, then
 * loss[b] = S_bce / S_w + 1 - (I + 1) / (U - I + 1) and sums[b, 4] (float). */
__global__ void loss_finish_kernel(int batch, int chunks, const double *partials, float *loss,
                                   float *sums) {
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= batch)
        return;
    double total[4] = {0.0, 0.0, 0.0, 0.0};
    for (int c = 0; c < chunks; c++)
        for (int k = 0; k < 4; k++)
            total[k] += partials[((size_t)b * chunks + c) * 4 + k];
    const double wbce = total[1] / total[0];
    const double wiou = 1.0 - (total[2] + 1.0) / (total[3] - total[2] + 1.0);
    loss[b] = (float)(wbce + wiou);
    for (int k = 0; k < 4; k++)
        sums[(size_t)b * 4 + k] = (float)total[k];
}

/* dlogits += dloss[b] * weight * ((p - y) / S_w + p (1 - p) (N - y (Q + N)) / Q^2), with
 * N = I + 1, Q = U - I + 1 from the saved float sums. Grid-stride over batch * plane. */
__global__ void loss_backward_kernel(size_t plane, size_t n, const float *logits,
                                     const float *target, const float *weight,
                                     const float *sums, const float *dloss, float *dlogits) {
    CX_GRID_STRIDE(i, n) {
        const size_t b = i / plane;
        const float *s = sums + b * 4;
        const double grad_loss = dloss[b], sum_w = s[0], inter = s[2], uni = s[3];
        const double num = inter + 1.0, den = uni - inter + 1.0;
        const double bce_scale = grad_loss / sum_w, iou_scale = grad_loss / (den * den);
        const double wgt = weight[i], yi = target[i], p = loss_sigmoid(logits[i]);
        const double grad = wgt * ((p - yi) * bce_scale +
                                   p * (1.0 - p) * (num - yi * (den + num)) * iou_scale);
        dlogits[i] += (float)grad;
    }
}

#endif
