/* CRC-32C (Castagnoli): the checksum the safetensors writer records per tensor.
 *
 * Reflected polynomial 0x82F63B78, initial value and final XOR 0xFFFFFFFF (the CRC of
 * "123456789" is 0xE3069283). Computed in software, eight bytes per step. */
#ifndef CX_CRC32C_H
#define CX_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends `crc` (0 to start) with bytes[0, n): cx_crc32c(cx_crc32c(0, a, n), b, m) equals
 * the CRC of a followed by b. */
uint32_t cx_crc32c(uint32_t crc, const void *bytes, size_t n);

#endif
