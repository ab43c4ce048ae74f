/* What the store's server and client share: the handshake's constants and proof, the
 * little-endian integers of the frames, nonces and the clock (protocol in store.h). */
#ifndef CX_DIST_STORE_WIRE_H
#define CX_DIST_STORE_WIRE_H

#include "sha256.h"

#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/random.h>
#endif

#define CX_STORE_MAGIC "CXSTORE1"
#define CX_NONCE_BYTES 32
#define CX_HELLO_BYTES (8 + CX_NONCE_BYTES)                    /* magic | server nonce */
#define CX_HELLO_REPLY_BYTES (CX_NONCE_BYTES + CX_SHA256_BYTES) /* client nonce | proof */
#define CX_CLIENT_TAG "codext-store-client"
#define CX_SERVER_TAG "codext-store-server"

enum { CX_STORE_REPLY_OK = 0, CX_STORE_REPLY_MISSING = 1, CX_STORE_REPLY_ERROR = 2 };

static inline void cx_wire_put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static inline uint32_t cx_wire_get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void cx_wire_put_u16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}
static inline uint16_t cx_wire_get_u16(const unsigned char *p) {
    return (uint16_t)(p[0] | p[1] << 8);
}
static inline void cx_wire_put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static inline uint64_t cx_wire_get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* HMAC-SHA256(secret, tag | nonce) */
static inline void cx_store_proof(const void *secret, size_t secret_len, const char *tag,
                                  const unsigned char nonce[CX_NONCE_BYTES],
                                  unsigned char out[CX_SHA256_BYTES]) {
    cx_hmac_sha256(secret, secret_len, tag, strlen(tag), nonce, CX_NONCE_BYTES, out);
}

/* n bytes from the kernel's CSPRNG; 0 on success. */
static inline int cx_store_random(unsigned char *out, size_t n) {
    size_t done = 0;
#ifdef __linux__
    while (done < n) {
        ssize_t got = getrandom(out + done, n - done, 0);
        if (got <= 0)
            break;
        done += (size_t)got;
    }
#endif
    if (done == n)
        return 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    while (done < n) {
        ssize_t got = read(fd, out + done, n - done);
        if (got <= 0)
            break;
        done += (size_t)got;
    }
    close(fd);
    return done == n ? 0 : -1;
}

static inline double cx_store_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
