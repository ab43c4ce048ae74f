/* The CUDA emulator standing in for the toolkit's cuda_fp16.h (see emu_fp16.h). */
#ifndef CX_EMU_CUDA_FP16_SHIM_H
#define CX_EMU_CUDA_FP16_SHIM_H
#include "../emu_cuda.h"
#endif
