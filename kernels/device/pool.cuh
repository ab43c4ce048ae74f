/* Average pooling kernels (device code; launched by kernels/pool.cu, which documents the
 * conventions): avgpool2d (square window, stride, zero padding, count_include_pad as
 * PyTorch), adaptive average pooling (PyTorch's bins) and the global mean per plane.
 *
 * Every kernel writes each output element from one thread, summing its terms in an order
 * fixed by the shape (row by row, columns in increasing order), so results do not depend
 * on the launch or the thread order. The backward kernels are gathers over the input
 * pixels (one thread per dx element, adding the outputs whose windows cover it): windows
 * overlap, and a scatter would need atomics. fp32 throughout. */
#ifndef CX_KERNELS_DEVICE_POOL_CUH
#define CX_KERNELS_DEVICE_POOL_CUH

#include "helpers.cuh"

// nvrtc-check: hot avgpool2d_forward_kernel avgpool2d_backward_kernel
// nvrtc-check: hot adaptive_avgpool2d_forward_kernel adaptive_avgpool2d_backward_kernel
// nvrtc-check: hot global_avgpool_forward_kernel global_avgpool_backward_kernel

/* Planes per block of global_avgpool_forward_kernel: one warp per plane. */
#define GLOBAL_POOL_WARPS 8

static __device__ __forceinline__ int pool_min(int a, int b) { return a < b ? a : b; }
static __device__ __forceinline__ int pool_max(int a, int b) { return a > b ? a : b; }

/* floor(a / b) for b > 0 and any sign of a */
static __device__ __forceinline__ int pool_floor_div(int a, int b) {
    int q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* Divisor factor of one axis for the window starting at `start` (may be negative), as
 * cpu/pool.c's window_count: with count_include_pad the window clipped to the padded
 * input, else to the input. */
static __device__ __forceinline__ int pool_window_count(int start, int k, int in, int pad,
                                                        int count_include_pad) {
    if (count_include_pad)
        return pool_min(start + k, in + pad) - start;
    int lo = pool_max(start, 0), hi = pool_min(start + k, in);
    return hi > lo ? hi - lo : 0;
}

/* x [planes, in_h, in_w] -> y [planes, out_h, out_w]; thread = output element */
__global__ void avgpool2d_forward_kernel(size_t n, int in_h, int in_w, int out_h, int out_w,
                                         int k, int stride, int pad, int count_include_pad,
                                         const float *x, float *y) {
    CX_GRID_STRIDE(idx, n) {
        int ow = (int)(idx % (size_t)out_w);
        size_t rest = idx / (size_t)out_w;
        int oh = (int)(rest % (size_t)out_h);
        size_t plane = rest / (size_t)out_h;
        int start_h = oh * stride - pad, start_w = ow * stride - pad;
        int lo_h = pool_max(start_h, 0), hi_h = pool_min(start_h + k, in_h);
        int lo_w = pool_max(start_w, 0), hi_w = pool_min(start_w + k, in_w);
        const float *xp = x + plane * (size_t)in_h * (size_t)in_w;
        float sum = 0.0f;
        for (int r = lo_h; r < hi_h; r++) {
            const float *row = xp + (size_t)r * (size_t)in_w;
            float row_sum = 0.0f;
            for (int c = lo_w; c < hi_w; c++)
                row_sum += row[c];
            sum += row_sum;
        }
        int count = pool_window_count(start_h, k, in_h, pad, count_include_pad) *
                    pool_window_count(start_w, k, in_w, pad, count_include_pad);
        y[idx] = count > 0 ? sum / (float)count : 0.0f;
    }
}

/* Outputs o whose window [o*stride - pad, o*stride - pad + k) covers input i:
 * [*first, *last] (empty when *first > *last). */
static __device__ __forceinline__ void pool_covering(int i, int k, int stride, int pad,
                                                     int n_out, int *first, int *last) {
    *first = pool_max(pool_floor_div(i + pad - k, stride) + 1, 0);
    *last = pool_min(pool_floor_div(i + pad, stride), n_out - 1);
}

/* dx [planes, in_h, in_w] += the transposed box filter of dy [planes, out_h, out_w], each
 * dy divided by its window's count; thread = dx element */
__global__ void avgpool2d_backward_kernel(size_t n, int in_h, int in_w, int out_h, int out_w,
                                          int k, int stride, int pad, int count_include_pad,
                                          const float *dy, float *dx) {
    CX_GRID_STRIDE(idx, n) {
        int j = (int)(idx % (size_t)in_w);
        size_t rest = idx / (size_t)in_w;
        int i = (int)(rest % (size_t)in_h);
        size_t plane = rest / (size_t)in_h;
        int first_h, last_h, first_w, last_w;
        pool_covering(i, k, stride, pad, out_h, &first_h, &last_h);
        pool_covering(j, k, stride, pad, out_w, &first_w, &last_w);
        const float *dyp = dy + plane * (size_t)out_h * (size_t)out_w;
        float sum = 0.0f;
        for (int oh = first_h; oh <= last_h; oh++) {
            int count_h = pool_window_count(oh * stride - pad, k, in_h, pad, count_include_pad);
            const float *row = dyp + (size_t)oh * (size_t)out_w;
            float row_sum = 0.0f;
            for (int ow = first_w; ow <= last_w; ow++) {
                int count = count_h * pool_window_count(ow * stride - pad, k, in_w, pad,
                                                        count_include_pad);
                row_sum += count > 0 ? row[ow] / (float)count : 0.0f;
            }
            sum += row_sum;
        }
        dx[idx] += sum;
    }
}

/* Adaptive bins: bin o of an axis covers [floor(o*in/out), ceil((o+1)*in/out)). */
static __device__ __forceinline__ int pool_bin_start(int o, int in, int out) {
    return (int)(((long long)o * in) / out);
}
static __device__ __forceinline__ int pool_bin_end(int o, int in, int out) {
    return (int)(((long long)(o + 1) * in + out - 1) / out);
}

/* x [planes, in_h, in_w] -> y [planes, out_h, out_w]; thread = output element */
__global__ void adaptive_avgpool2d_forward_kernel(size_t n, int in_h, int in_w, int out_h,
                                                  int out_w, const float *x, float *y) {
    CX_GRID_STRIDE(idx, n) {
        int ow = (int)(idx % (size_t)out_w);
        size_t rest = idx / (size_t)out_w;
        int oh = (int)(rest % (size_t)out_h);
        size_t plane = rest / (size_t)out_h;
        int h0 = pool_bin_start(oh, in_h, out_h), h1 = pool_bin_end(oh, in_h, out_h);
        int w0 = pool_bin_start(ow, in_w, out_w), w1 = pool_bin_end(ow, in_w, out_w);
        const float *xp = x + plane * (size_t)in_h * (size_t)in_w;
        float sum = 0.0f;
        for (int r = h0; r < h1; r++) {
            const float *row = xp + (size_t)r * (size_t)in_w;
            float row_sum = 0.0f;
            for (int c = w0; c < w1; c++)
                row_sum += row[c];
            sum += row_sum;
        }
        y[idx] = sum / ((float)(h1 - h0) * (float)(w1 - w0));
    }
}

/* Bins that contain input i: [*first, *last]. Bin o contains i when start(o) <= i <
 * end(o), i.e. floor(i*out/in) <= o <= ceil((i+1)*out/in) - 1; both bounds are also
 * checked against the bins themselves by the caller. */
static __device__ __forceinline__ void pool_bins_of(int i, int in, int out, int *first,
                                                    int *last) {
    *first = pool_max((int)(((long long)i * out) / in), 0);
    *last = pool_min((int)(((long long)(i + 1) * out + in - 1) / in) - 1, out - 1);
}

/* dx [planes, in_h, in_w] += sum over the bins containing the pixel of dy / bin size;
 * thread = dx element */
__global__ void adaptive_avgpool2d_backward_kernel(size_t n, int in_h, int in_w, int out_h,
                                                   int out_w, const float *dy, float *dx) {
    CX_GRID_STRIDE(idx, n) {
        int j = (int)(idx % (size_t)in_w);
        size_t rest = idx / (size_t)in_w;
        int i = (int)(rest % (size_t)in_h);
        size_t plane = rest / (size_t)in_h;
        int first_h, last_h, first_w, last_w;
        pool_bins_of(i, in_h, out_h, &first_h, &last_h);
        pool_bins_of(j, in_w, out_w, &first_w, &last_w);
        const float *dyp = dy + plane * (size_t)out_h * (size_t)out_w;
        float sum = 0.0f;
        for (int oh = first_h; oh <= last_h; oh++) {
            int h0 = pool_bin_start(oh, in_h, out_h), h1 = pool_bin_end(oh, in_h, out_h);
            if (i < h0 || i >= h1)
                continue;
            const float *row = dyp + (size_t)oh * (size_t)out_w;
            float row_sum = 0.0f;
            for (int ow = first_w; ow <= last_w; ow++) {
                int w0 = pool_bin_start(ow, in_w, out_w), w1 = pool_bin_end(ow, in_w, out_w);
                if (j < w0 || j >= w1)
                    continue;
                row_sum += row[ow] / ((float)(h1 - h0) * (float)(w1 - w0));
            }
            sum += row_sum;
        }
        dx[idx] += sum;
    }
}

/* Sum over the 32 lanes by an xor butterfly: every lane ends with the same value, whose
 * order of additions depends on nothing but the lane values. */
static __device__ __forceinline__ float pool_warp_sum(float v) {
    for (int offset = 16; offset > 0; offset /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

/* x [planes, hw] -> y [planes]: one warp per plane (GLOBAL_POOL_WARPS per block), lane l
 * summing elements l, l + 32, ... then the butterfly. */
__global__ void global_avgpool_forward_kernel(int planes, int hw, const float *x, float *y) {
    int lane = threadIdx.x % 32;
    for (size_t plane = (size_t)blockIdx.x * GLOBAL_POOL_WARPS + threadIdx.x / 32;
         plane < (size_t)planes; plane += (size_t)gridDim.x * GLOBAL_POOL_WARPS) {
        const float *xp = x + plane * (size_t)hw;
        float sum = 0.0f;
        for (int i = lane; i < hw; i += 32)
            sum += xp[i];
        sum = pool_warp_sum(sum); /* the loop's condition is uniform across the warp */
        if (lane == 0)
            y[plane] = sum / (float)hw;
    }
}

/* dx [planes, hw] += dy[plane] / hw; thread = dx element */
__global__ void global_avgpool_backward_kernel(size_t n, int hw, const float *dy, float *dx) {
    CX_GRID_STRIDE(idx, n) { dx[idx] += dy[idx / (size_t)hw] / (float)hw; }
}

#endif
