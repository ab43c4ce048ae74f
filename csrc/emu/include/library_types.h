/* The CUDA emulator standing in for the toolkit's library_types.h: the library property
 * names that cublasGetProperty takes and the data types of cublasGemmEx
 * (csrc/emu/emu_cublas.cc), with the toolkit's numbers. */
#ifndef CX_EMU_LIBRARY_TYPES_SHIM_H
#define CX_EMU_LIBRARY_TYPES_SHIM_H
typedef enum libraryPropertyType_t : int { MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL } libraryPropertyType;
typedef enum cudaDataType_t : int {
    CUDA_R_32F = 0,
    CUDA_R_64F = 1,
    CUDA_R_16F = 2,
    CUDA_R_16BF = 14
} cudaDataType;
#endif
