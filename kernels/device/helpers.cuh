/* Device-only helpers for the device sources (the .cuh files of kernels/device/).
 *
 * Every file in kernels/device/ holds device code only (__global__ and __device__
 * functions, the constants their launches share) and must compile on its own under
 * NVRTC as well as nvcc (docs/cuda-build.md):
 *   - it includes only other files of kernels/device/ and CUDA's device headers
 *     (cuda_fp16.h, cuda_bf16.h, ...), never cuBLAS, cuDNN, the C library (stdio.h,
 *     stdlib.h, string.h, stddef.h) or our host headers (ops/, ../common.cuh);
 *   - it uses nullptr, not NULL (NVRTC has no stddef.h); size_t is built in;
 *   - a template kernel is listed on a `// nvrtc-check: instantiate NAME<ARGS> ...` line
 *     so that the check compiles it, and the kernels of the training step are listed on
 *     a `// nvrtc-check: hot NAME ...` line (no register spills allowed).
 * tools/nvrtc_check.py enforces all of it with NVRTC 12 (CI), for sm_60 to sm_120.
 * The host side (launch wrappers, cuBLAS, cuDNN, the backend state) is in the .cu files of
 * kernels/, each including its family's device file. */
#ifndef CX_KERNELS_DEVICE_HELPERS_CUH
#define CX_KERNELS_DEVICE_HELPERS_CUH

/* A grid-stride loop over [0, n): one item per thread per step. */
#define CX_GRID_STRIDE(i, n)                                                                \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                 \
         i += (size_t)blockDim.x * gridDim.x)

#endif
