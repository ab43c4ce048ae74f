/* The CPU backend's first error.
 *
 * CPU ops return nothing (ops.h), like a device backend's: an op that cannot finish (a
 * scratch allocation failed, on any pool thread) records the error here, and the
 * backend's sync() reports it through cx_fail and clears it. Only the first error since
 * the last sync() is kept; later ones are counted in its message. An op that records an
 * error leaves its outputs unspecified: callers must check sync() before any result
 * leaves the engine.
 * The CPU backend is one table per process, so this record is too: when two threads run
 * CPU models at once, an error may be reported by the other thread's next sync() (it is
 * still reported, once). */
#ifndef CX_CPU_ERROR_H
#define CX_CPU_ERROR_H

#include "../core/cx.h"

/* Thread-safe; callable from inside pool tasks. */
void cx_cpu_record_error(cx_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* CX_OK, or the first recorded error (its message set with cx_fail), which is then
 * cleared. */
cx_status cx_cpu_take_error(void);

#endif
