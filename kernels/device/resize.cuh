/* Bilinear resizing kernels (device code; launched by kernels/resize.cu, which documents
 * the math): PyTorch's interpolate(mode='bilinear', align_corners=False), no antialias.
 *
 * The taps of an axis are computed in float exactly as cpu/resize.c's build_axis does,
 * with the _rn intrinsics so that no multiply-add is contracted into an FMA (a different
 * rounding of the source coordinate could pick another input pixel at a boundary than
 * the CPU). The interpolation uses the same operations in the same order as the CPU. */
#ifndef CX_KERNELS_DEVICE_RESIZE_CUH
#define CX_KERNELS_DEVICE_RESIZE_CUH

#include "helpers.cuh"

// nvrtc-check: hot resize_bilinear_forward_kernel resize_bilinear_backward_rows_kernel
// nvrtc-check: hot resize_bilinear_backward_cols_kernel

struct resize_tap {
    int i0, i1;
    float l0, l1;
};

/* Output o of an axis resized from `in` to `out` reads inputs i0 and i1 with weights l0
 * and l1:
 *   scale = in / out; src = max(scale * (o + 0.5) - 0.5, 0)
 *   i0 = min(floor(src), in - 1), i1 = i0 + (i0 < in - 1), l1 = clamp(src - i0, 0, 1)
 * and in == out is the identity. */
static __device__ __forceinline__ resize_tap resize_tap_of(int in, int out, int o) {
    resize_tap t;
    if (in == out) {
        t.i0 = t.i1 = o;
        t.l0 = 1.0f;
        t.l1 = 0.0f;
        return t;
    }
    float scale = __fdiv_rn((float)in, (float)out);
    float src = __fadd_rn(__fmul_rn(scale, __fadd_rn((float)o, 0.5f)), -0.5f);
    if (src < 0.0f)
        src = 0.0f;
    int i0 = (int)floorf(src);
    if (i0 > in - 1)
        i0 = in - 1;
    float l1 = __fadd_rn(src, -(float)i0);
    l1 = l1 < 0.0f ? 0.0f : (l1 > 1.0f ? 1.0f : l1);
    t.i0 = i0;
    t.i1 = i0 + (i0 < in - 1 ? 1 : 0);
    t.l1 = l1;
    t.l0 = __fadd_rn(1.0f, -l1);
    return t;
}

/* The weight with which tap t reads input i (0 when it does not). */
static __device__ __forceinline__ float resize_tap_weight(resize_tap t, int i) {
    return __fadd_rn(t.i0 == i ? t.l0 : 0.0f, t.i1 == i ? t.l1 : 0.0f);
}

/* Outputs that may read input i: a superset of those with i0 in {i - 1, i}, i.e. with
 * i - 1 <= src < i + 1, from (2o + 1) * in / (2 out) - 1/2 = src, widened by one output
 * on each side against rounding (callers test each tap). [*first, *last] within [0, out). */
static __device__ __forceinline__ void resize_readers(int i, int in, int out, int *first,
                                                      int *last) {
    if (in == out) {
        *first = *last = i;
        return;
    }
    long long in2 = 2 * (long long)in;
    long long lo_num = (2 * (long long)i - 1) * out - in; /* o >= lo_num / in2 */
    long long hi_num = (2 * (long long)i + 3) * out - in; /* o <  hi_num / in2 */
    long long lo = (lo_num >= 0 ? lo_num / in2 : -((-lo_num + in2 - 1) / in2)) - 1;
    long long hi = (hi_num >= 0 ? (hi_num + in2 - 1) / in2 : -(-hi_num / in2)) + 1;
    *first = lo < 0 ? 0 : (int)lo;
    *last = hi > out - 1 ? out - 1 : (int)hi;
}

/* x [planes, in_h, in_w] -> y [planes, out_h, out_w]; thread = output element */
__global__ void resize_bilinear_forward_kernel(size_t n, int in_h, int in_w, int out_h,
                                               int out_w, const float *x, float *y) {
    CX_GRID_STRIDE(idx, n) {
        int ow = (int)(idx % (size_t)out_w);
        size_t rest = idx / (size_t)out_w;
        int oh = (int)(rest % (size_t)out_h);
        size_t plane = rest / (size_t)out_h;
        resize_tap th = resize_tap_of(in_h, out_h, oh);
        resize_tap tw = resize_tap_of(in_w, out_w, ow);
        const float *xp = x + plane * (size_t)in_h * (size_t)in_w;
        const float *row0 = xp + (size_t)th.i0 * (size_t)in_w;
        const float *row1 = xp + (size_t)th.i1 * (size_t)in_w;
        float top = __fadd_rn(__fmul_rn(row0[tw.i0], tw.l0), __fmul_rn(row0[tw.i1], tw.l1));
        float bottom = __fadd_rn(__fmul_rn(row1[tw.i0], tw.l0), __fmul_rn(row1[tw.i1], tw.l1));
        y[idx] = __fadd_rn(__fmul_rn(top, th.l0), __fmul_rn(bottom, th.l1));
    }
}

/* Backward, pass 1 (over the height): rows [planes, in_h, out_w] =
 *   sum over the output rows oh that read input row i of weight(oh, i) * dy[oh, :]
 * in increasing oh, skipping zero weights (cpu/resize.c's `combined`); thread = element */
__global__ void resize_bilinear_backward_rows_kernel(size_t n, int in_h, int out_h, int out_w,
                                                     const float *dy, float *rows) {
    CX_GRID_STRIDE(idx, n) {
        int ow = (int)(idx % (size_t)out_w);
        size_t rest = idx / (size_t)out_w;
        int i = (int)(rest % (size_t)in_h);
        size_t plane = rest / (size_t)in_h;
        const float *dyp = dy + plane * (size_t)out_h * (size_t)out_w + ow;
        int first, last;
        resize_readers(i, in_h, out_h, &first, &last);
        float sum = 0.0f;
        for (int oh = first; oh <= last; oh++) {
            float wh = resize_tap_weight(resize_tap_of(in_h, out_h, oh), i);
            if (wh == 0.0f)
                continue;
            sum = __fadd_rn(sum, __fmul_rn(wh, dyp[(size_t)oh * (size_t)out_w]));
        }
        rows[idx] = sum;
    }
}

/* Backward, pass 2 (over the width): dx [planes, in_h, in_w] += sum over the output
 * columns ow that read input column j, in increasing ow, of l0 * rows[ow] (when i0 == j)
 * then l1 * rows[ow] (when i1 == j), as cpu/resize.c spreads its row; thread = dx element */
__global__ void resize_bilinear_backward_cols_kernel(size_t n, int in_w, int out_w,
                                                     const float *rows, float *dx) {
    CX_GRID_STRIDE(idx, n) {
        int j = (int)(idx % (size_t)in_w);
        size_t row = idx / (size_t)in_w; /* plane * in_h + i */
        const float *rp = rows + row * (size_t)out_w;
        int first, last;
        resize_readers(j, in_w, out_w, &first, &last);
        float sum = 0.0f;
        for (int ow = first; ow <= last; ow++) {
            resize_tap tw = resize_tap_of(in_w, out_w, ow);
            if (tw.i0 == j)
                sum = __fadd_rn(sum, __fmul_rn(tw.l0, rp[ow]));
            if (tw.i1 == j)
                sum = __fadd_rn(sum, __fmul_rn(tw.l1, rp[ow]));
        }
        dx[idx] = __fadd_rn(dx[idx], sum);
    }
}

#endif
