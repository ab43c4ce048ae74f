/* Direct convolution kernels (device code; launched by kernels/conv.cu): every depthwise
 * convolution (groups == in_ch == out_ch: EdgeNeXt's k x k token mixers, the experts'
 * depthwise branches), and any other convolution when cuDNN offers no algorithm that
 * passes the backend's filters (a deterministic backend and no deterministic algorithm, or
 * none within the workspace limit). Layouts as ops.h: x [B, C_in, H, W],
 * w [C_out, C_in / groups, kh, kw], y [B, C_out, OH, OW]; padding pad_h / pad_w, one
 * stride and one dilation for both axes, cross-correlation, PyTorch's group order.
 *
 * Every sum has a fixed order that depends only on the shape (no atomics): each output
 * and input-gradient element is summed by one thread, each filter-gradient element by one
 * block, in the same order on every run. */
#ifndef CX_KERNELS_DEVICE_DIRECT_CONV_CUH
#define CX_KERNELS_DEVICE_DIRECT_CONV_CUH

#include "helpers.cuh"

// nvrtc-check: hot direct_conv_forward_kernel direct_conv_backward_data_kernel direct_conv_backward_filter_kernel

/* The geometry every kernel needs. cin_g, cout_g: channels per group in and out. */
struct cx_direct_conv {
    int batch, in_ch, out_ch, in_h, in_w, out_h, out_w, k_h, k_w;
    int stride, pad_h, pad_w, dilation, cin_g, cout_g;
};

/* y = (bias when not null) + x (*) w; one thread per output element: the bias first, then
 * for each input channel of the group the taps in row order (a depthwise convolution so
 * sums as the CPU backend does, csrc/cpu/conv_depthwise.c). */
__global__ void direct_conv_forward_kernel(cx_direct_conv g, const float *x, const float *w,
                                           const float *bias, float *y) {
    size_t n = (size_t)g.batch * g.out_ch * g.out_h * g.out_w;
    CX_GRID_STRIDE(i, n) {
        int ox = (int)(i % (size_t)g.out_w);
        int oy = (int)(i / (size_t)g.out_w % (size_t)g.out_h);
        size_t plane = i / ((size_t)g.out_w * g.out_h); /* b * out_ch + oc */
        int oc = (int)(plane % (size_t)g.out_ch), b = (int)(plane / (size_t)g.out_ch);
        int first_ic = oc / g.cout_g * g.cin_g;
        float sum = bias ? bias[oc] : 0.0f;
        for (int icl = 0; icl < g.cin_g; icl++) {
            const float *xp = x + ((size_t)b * g.in_ch + first_ic + icl) * g.in_h * g.in_w;
            const float *wk = w + ((size_t)oc * g.cin_g + icl) * g.k_h * g.k_w;
            for (int ky = 0; ky < g.k_h; ky++) {
                int iy = oy * g.stride - g.pad_h + ky * g.dilation;
                if (iy < 0 || iy >= g.in_h)
                    continue;
                for (int kx = 0; kx < g.k_w; kx++) {
                    int ix = ox * g.stride - g.pad_w + kx * g.dilation;
                    if (ix >= 0 && ix < g.in_w)
                        sum += xp[(size_t)iy * g.in_w + ix] * wk[ky * g.k_w + kx];
                }
            }
        }
        y[i] = sum;
    }
}

/* dx += dy (*)^T w; one thread per input element: for each output channel of the group
 * the taps in row order. */
__global__ void direct_conv_backward_data_kernel(cx_direct_conv g, const float *w,
                                                 const float *dy, float *dx) {
    size_t n = (size_t)g.batch * g.in_ch * g.in_h * g.in_w;
    CX_GRID_STRIDE(i, n) {
        int ix = (int)(i % (size_t)g.in_w);
        int iy = (int)(i / (size_t)g.in_w % (size_t)g.in_h);
        size_t plane = i / ((size_t)g.in_w * g.in_h); /* b * in_ch + ic */
        int ic = (int)(plane % (size_t)g.in_ch), b = (int)(plane / (size_t)g.in_ch);
        int group = ic / g.cin_g, icl = ic % g.cin_g;
        float sum = 0.0f;
        for (int ocl = 0; ocl < g.cout_g; ocl++) {
            int oc = group * g.cout_g + ocl;
            const float *dyp = dy + ((size_t)b * g.out_ch + oc) * g.out_h * g.out_w;
            const float *wk = w + ((size_t)oc * g.cin_g + icl) * g.k_h * g.k_w;
            for (int ky = 0; ky < g.k_h; ky++) {
                int ty = iy + g.pad_h - ky * g.dilation; /* = oy * stride */
                if (ty < 0 || ty % g.stride)
                    continue;
                int oy = ty / g.stride;
                if (oy >= g.out_h)
                    continue;
                for (int kx = 0; kx < g.k_w; kx++) {
                    int tx = ix + g.pad_w - kx * g.dilation;
                    if (tx < 0 || tx % g.stride)
                        continue;
                    int ox = tx / g.stride;
                    if (ox < g.out_w)
                        sum += dyp[(size_t)oy * g.out_w + ox] * wk[ky * g.k_w + kx];
                }
            }
        }
        dx[i] += sum;
    }
}

/* Two warps a block: the grid has a block per filter element (thousands for EdgeNeXt's
 * 7x7 depthwise layers), which keeps a GPU busy, and a short tree (6 barriers; on the CUDA
 * emulator every barrier switches every thread, and 256 threads made the emulated
 * training tests 2.5x slower). */
#define CX_DIRECT_FILTER_BLOCK 64

/* dw[oc, icl, ky, kx] += sum over (b, oy, ox) of dy * x; one block per filter element (grid
 * out_ch * cin_g * k_h * k_w), each thread summing a fixed stride of the B * OH * OW terms,
 * then a fixed tree over the block, in double: the sum runs over every pixel of the batch
 * (hundreds of thousands of terms). Launch with CX_DIRECT_FILTER_BLOCK threads. */
__global__ void direct_conv_backward_filter_kernel(cx_direct_conv g, const float *x,
                                                   const float *dy, float *dw) {
    __shared__ double partial[CX_DIRECT_FILTER_BLOCK];
    int taps = g.k_h * g.k_w;
    int tap = (int)(blockIdx.x % (unsigned)taps);
    int icl = (int)(blockIdx.x / (unsigned)taps % (unsigned)g.cin_g);
    int oc = (int)(blockIdx.x / ((unsigned)taps * (unsigned)g.cin_g));
    int ky = tap / g.k_w, kx = tap % g.k_w;
    int ic = oc / g.cout_g * g.cin_g + icl;
    size_t per_image = (size_t)g.out_h * g.out_w, n = (size_t)g.batch * per_image;
    double sum = 0.0;
    for (size_t j = threadIdx.x; j < n; j += CX_DIRECT_FILTER_BLOCK) {
        int b = (int)(j / per_image);
        int oy = (int)(j % per_image / (size_t)g.out_w), ox = (int)(j % (size_t)g.out_w);
        int iy = oy * g.stride - g.pad_h + ky * g.dilation;
        int ix = ox * g.stride - g.pad_w + kx * g.dilation;
        if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w)
            continue;
        sum += (double)dy[((size_t)b * g.out_ch + oc) * per_image + j % per_image] *
               (double)x[(((size_t)b * g.in_ch + ic) * g.in_h + iy) * g.in_w + ix];
    }
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int half = CX_DIRECT_FILTER_BLOCK / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half)
            partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) /* w [out_ch, cin_g, kh, kw]: index (oc * cin_g + icl) * taps + tap */
        dw[blockIdx.x] += (float)partial[0];
}

#endif
