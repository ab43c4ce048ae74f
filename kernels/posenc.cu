/* Fourier positional encoding on the GPU, host side (op_list.h; cpu/attention.c is the
 * reference): out [2*hidden, h, w], one thread per element, in double rounded once to
 * float as the CPU computes it. The kernel is in device/posenc.cuh. */
#include "common.cuh"
#include "device/posenc.cuh"

void cu_posenc_fourier(cx_backend *be, int hidden, float temperature, int h, int w,
                       float *out) {
    cu_state *st = cu_get(be);
    if (hidden <= 0 || h <= 0 || w <= 0)
        return;
    size_t n = 2 * (size_t)hidden * (size_t)h * (size_t)w;
    CX_LAUNCH(posenc_fourier_kernel, cu_blocks(n, CU_BLOCK), CU_BLOCK, 0, st->stream)(
        n, hidden, temperature, h, w, out);
    cu_ok_launch(st, "posenc_fourier");
}
