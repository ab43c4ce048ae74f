/* The CUDA emulator, for kernel and host code compiled as C++ (g++ or clang++) instead of
 * by nvcc: include this (or pass -include emu/emu_cuda.h) and link the emulator sources (csrc/emu, the .cc files) into the
 * same binary or shared library as the kernels. docs/emulator.md says what it runs, what
 * it catches and what it cannot.
 *
 *   emu_runtime.h  the runtime API (memory, copies, streams, events, errors, the device)
 *   emu_device.h   what kernels use (indices, barriers, warp operations, atomics, math)
 *                  and the launch behind CX_LAUNCH (kernels/launch.cuh)
 *   emu_fp16.h     __half and __nv_bfloat16 (cuda_fp16.h, cuda_bf16.h)
 *
 * Test infrastructure: no shipped library contains it. */
#ifndef CX_EMU_CUDA_H
#define CX_EMU_CUDA_H

#if defined(__CUDACC__)
#error "emu/emu_cuda.h replaces the CUDA toolkit; nvcc and NVRTC builds must not include it"
#endif
#ifndef __cplusplus
#error "the CUDA emulator is C++: compile kernels with g++ -x c++ or clang++ -x c++"
#endif

#ifndef CX_EMU
#define CX_EMU 1
#endif

#include "emu_device.h"
#include "emu_fp16.h"
#include "emu_runtime.h"

#endif
