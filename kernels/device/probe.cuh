/* The kernel the backend launches once at creation (kernels/backend_cuda.cu): a GPU this
 * build has no kernel image for (an architecture below the build's and no PTX to JIT)
 * fails here with a clear error, before any training starts. */
#ifndef CX_KERNELS_DEVICE_PROBE_CUH
#define CX_KERNELS_DEVICE_PROBE_CUH

#include "helpers.cuh"

/* does nothing (n = 0 items) */
__global__ void probe_kernel(int n, float *out) {
    CX_GRID_STRIDE(i, (size_t)n) { out[i] = 0.0f; }
}

#endif
