/* The CUDA emulator standing in for the toolkit's cuda_runtime.h: with -I csrc/emu/include,
 * host code that includes <cuda_runtime.h> compiles against the emulator (emu_cuda.h). */
#ifndef CX_EMU_CUDA_RUNTIME_SHIM_H
#define CX_EMU_CUDA_RUNTIME_SHIM_H
#include "../emu_cuda.h"
#endif
