/* The CUDA backend factory: creates CUDA backends from a library loaded lazily.
 *
 * The CUDA ops live in codext/libcodext_cuda.so (built from kernels/ by setup.py), not
 * in codext._C: `import codext` must never load a CUDA library, because a notebook
 * process shares its address space with torch and may have no GPU driver at all. The
 * library is opened with dlopen() the first time a caller asks for a CUDA backend (a GPU
 * worker, or the GPU tests) and stays loaded for the life of the process.
 *
 * The loader (cuda_loader.c, compiled into _C, plain C) finds the library next to the
 * loaded _C module (dladdr), opens it and resolves its one exported entry point, whose
 * table is described in cuda_abi.h (the only header the library shares with _C). */
#ifndef CX_CUDA_LOADER_H
#define CX_CUDA_LOADER_H

#include "cuda_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Opens libcodext_cuda.so once (later calls return the cached result, success or
 * failure). The library is looked up next to the _C module, or at $CODEXT_CUDA_LIBRARY
 * when set. Errors (CX_ERUNTIME) say which of these happened: a CPU-only build (no
 * library), a dlopen failure (with dlerror's text: usually a missing libcudnn.so.9 or
 * libcublas), or a library from another build (ABI mismatch). */
cx_status cx_cuda_load(const cx_cuda_api **api);

/* 1 when the library loads and at least one CUDA device is usable, else 0 with the reason
 * written to `reason` (also on success: a line naming the library and the devices).
 * Loads CUDA libraries into this process: for GPU workers and tests, never the notebook. */
int cx_cuda_available(char *reason, size_t size);

/* Creates and destroys a CUDA backend through the loaded library. */
cx_status cx_cuda_backend_create(int device, int deterministic, int allow_tf32,
                                 cx_backend **out);
void cx_cuda_backend_destroy(cx_backend *be);
/* Sets a CUDA backend's precision (cx_precision, cuda_abi.h); CX_EINVAL for BF16 on a
 * device older than sm_80 or an unknown value. */
cx_status cx_cuda_backend_set_precision(cx_backend *be, int precision);
/* The device's free and total memory (cuda_abi.h memory_info). */
cx_status cx_cuda_backend_memory(cx_backend *be, size_t *free_bytes, size_t *total_bytes);
/* "fp32", "fp16" or "bf16" -> cx_precision; -1 for anything else. */
int cx_precision_from_name(const char *name);

/* A process-wide CUDA backend for the tests: device $CODEXT_CUDA_DEVICE (default 0),
 * deterministic, no TF32. Created on first use and kept until the process exits. */
cx_status cx_cuda_shared_backend(cx_backend **out);

#ifdef __cplusplus
}
#endif
#endif
