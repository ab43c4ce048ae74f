/* SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), for the store's challenge/response.
 * Our own small implementation: the store must not depend on OpenSSL. */
#ifndef CX_DIST_SHA256_H
#define CX_DIST_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define CX_SHA256_BYTES 32

typedef struct {
    uint32_t state[8];
    uint64_t length;        /* bytes hashed so far */
    unsigned char block[64];
    size_t used;            /* bytes waiting in block */
} cx_sha256_ctx;

void cx_sha256_init(cx_sha256_ctx *h);
void cx_sha256_update(cx_sha256_ctx *h, const void *data, size_t n);
void cx_sha256_final(cx_sha256_ctx *h, unsigned char out[CX_SHA256_BYTES]);
void cx_sha256(const void *data, size_t n, unsigned char out[CX_SHA256_BYTES]);

/* out = HMAC-SHA256(key, a || b); b may be NULL with nb == 0. */
void cx_hmac_sha256(const void *key, size_t key_len, const void *a, size_t na, const void *b,
                    size_t nb, unsigned char out[CX_SHA256_BYTES]);

/* 1 when the n bytes are equal; the time does not depend on where they differ. */
int cx_equal_secret(const void *a, const void *b, size_t n);

#endif
