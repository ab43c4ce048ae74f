/* The CUDA emulator standing in for the toolkit's library_types.h: the library property
 * names that cublasGetProperty takes (csrc/emu/emu_cublas.cc). */
#ifndef CX_EMU_LIBRARY_TYPES_SHIM_H
#define CX_EMU_LIBRARY_TYPES_SHIM_H
typedef enum libraryPropertyType_t : int { MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL } libraryPropertyType;
#endif
