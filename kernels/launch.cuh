/* Kernel launches and dynamic shared memory that compile three ways: nvcc, NVRTC (both
 * define __CUDACC__) and the CUDA emulator (g++/clang++ with -DCX_EMU, csrc/emu/ and
 * docs/emulator.md).
 *
 *   CX_LAUNCH(kernel, grid, block[, shared_bytes[, stream]])(args...);
 *       is kernel<<<grid, block, shared_bytes, stream>>>(args...) under nvcc; under the
 *       emulator it runs the kernel on emulated threads. A template kernel goes in as
 *       name<args> (one template argument, or an alias, as a macro argument cannot hold
 *       an unbracketed comma). Check the launch with cudaGetLastError() as usual.
 *   CX_DYNAMIC_SHARED(type, name);
 *       inside a kernel: `type *name` points at the launch's dynamic shared memory
 *       (extern __shared__ under nvcc, 16-byte aligned).
 *
 * Under NVRTC only CX_DYNAMIC_SHARED is useful (the host launches through the driver). */
#ifndef CX_KERNELS_LAUNCH_CUH
#define CX_KERNELS_LAUNCH_CUH

#if defined(__CUDACC__)
#define CX_LAUNCH(kernel, ...) kernel<<<__VA_ARGS__>>>
#define CX_DYNAMIC_SHARED(type, name)                                                       \
    extern __shared__ __align__(16) unsigned char cx_dynamic_shared_bytes[];                \
    type *name = reinterpret_cast<type *>(cx_dynamic_shared_bytes)
#elif defined(CX_EMU)
#include "emu/emu_cuda.h"
#define CX_LAUNCH(kernel, ...) ::cx_emu::make_launcher(kernel, #kernel, __VA_ARGS__)
#define CX_DYNAMIC_SHARED(type, name) type *name = reinterpret_cast<type *>(::cx_emu::dynamic_shared())
#else
#error "kernels/ compile with nvcc, NVRTC, or a C++ compiler with -DCX_EMU against the CUDA emulator (csrc/emu)"
#endif

#endif
