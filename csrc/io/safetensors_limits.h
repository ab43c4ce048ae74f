/* Limits and byte order shared by the safetensors reader and writer, so that whatever
 * the writer produces the reader accepts. Private to csrc/io. */
#ifndef CX_SAFETENSORS_LIMITS_H
#define CX_SAFETENSORS_LIMITS_H

#include <limits.h>
#include <stdint.h>

/* The reference implementation refuses larger headers; no valid file has one. */
#define ST_MAX_HEADER_BYTES ((uint64_t)100000000)
/* Product of a shape's non-zero dims must stay below this so the float32 copy's byte
 * count (and NumPy's) cannot overflow. */
#define ST_MAX_NUMEL ((uint64_t)INT64_MAX / 8)

/* Metadata key holding the per-tensor checksums (see safetensors.h). */
#define ST_CHECKSUM_KEY "codext_crc32c"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define ST_LITTLE_ENDIAN 0
#else
#define ST_LITTLE_ENDIAN 1
#endif

#endif
