/* Fourier positional encoding (device code; launched by kernels/posenc.cu): EdgeNeXt's
 * PositionalEncodingFourier before its 1x1 projection, as cpu/attention.c computes it.
 *
 * out [2*hidden, h, w]: channel c < hidden varies with the row, c >= hidden with the
 * column; with i = c mod hidden and p the 1-based row (column) index,
 *   value = p / (size + 1e-6) * 2pi / temperature^(2 floor(i/2) / hidden)
 * and sin(value) on even i, cos(value) on odd i, computed in double and rounded once to
 * float (the CPU's operations in the CPU's order; CUDA's double sin, cos and pow are
 * within 2 ulp of glibc's, far below the float rounding). */
#ifndef CX_KERNELS_DEVICE_POSENC_CUH
#define CX_KERNELS_DEVICE_POSENC_CUH

#include "helpers.cuh"

// nvrtc-check: hot posenc_fourier_kernel

#define POSENC_TWO_PI 6.283185307179586476925286766559

/* thread = output element of out [2*hidden, h, w] */
__global__ void posenc_fourier_kernel(size_t n, int hidden, float temperature, int h, int w,
                                      float *out) {
    CX_GRID_STRIDE(idx, n) {
        int col = (int)(idx % (size_t)w);
        size_t rest = idx / (size_t)w;
        int row = (int)(rest % (size_t)h);
        int c = (int)(rest / (size_t)h);
        int i = c % hidden;
        double dim_t = pow((double)temperature, (double)(2 * (i / 2)) / hidden);
        double value = c < hidden ? (row + 1) / (h + 1e-6) * POSENC_TWO_PI / dim_t
                                  : (col + 1) / (w + 1e-6) * POSENC_TWO_PI / dim_t;
        out[idx] = (float)(i % 2 == 0 ? sin(value) : cos(value));
    }
}

#endif
