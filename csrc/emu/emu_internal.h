/* Shared between the emulator's sources (not for kernel code). */
#ifndef CX_EMU_INTERNAL_H
#define CX_EMU_INTERNAL_H

#include <stdarg.h>

#include <mutex>

#include "emu_device.h"

namespace cx_emu {
/* Held by every runtime call that reads or changes emulator state: launches, copies and
 * memory management from several host threads run one at a time. */
std::recursive_mutex &big_lock(void);

/* Records `code` with a message (printf-style) as the last error; returns code. */
cudaError_t fail(cudaError_t code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
cudaError_t vfail(cudaError_t code, const char *fmt, va_list args);
/* 1 when `stream` is 0, a legacy/per-thread handle or a live stream. */
int stream_valid(cudaStream_t stream);
/* The dynamic shared memory limit set for `kernel` (cudaFuncSetAttribute), else the
 * default. */
size_t dynamic_shared_limit(const void *kernel);

/* Device memory (emu_memory.cc). open: every live allocation readable and writable (for
 * a launch); close: all back to PROT_NONE. */
void device_memory_open(void);
void device_memory_close(void);
size_t device_bytes_in_use(void);

/* Runs the blocks of a checked launch (emu_sched.cc); returns cudaSuccess or the error
 * it recorded. */
cudaError_t run_grid(const char *name, dim3 grid, dim3 block, size_t shared_bytes,
                     const kernel_call *call);
} // namespace cx_emu

#endif
