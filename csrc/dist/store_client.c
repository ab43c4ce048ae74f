/* The store's client (protocol in store.h): blocking socket calls bounded by a timeout. */
#include "store.h"
#include "store_wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct cx_store_client {
    int fd;
    double timeout_s;
    char where[128]; /* host:port, for messages */
};

/* Sends or receives exactly n bytes before the deadline; CX_ERUNTIME naming `what`. */
static cx_status transfer(cx_store_client *c, void *buf, size_t n, int sending, const char *what) {
    unsigned char *p = buf;
    double deadline = cx_store_now() + c->timeout_s;
    size_t done = 0;
    while (done < n) {
        double left = deadline - cx_store_now();
        if (c->timeout_s > 0 && left <= 0)
            return cx_fail(CX_ERUNTIME, "the store at %s did not answer within %.1f s (%s)",
                           c->where, c->timeout_s, what);
        struct pollfd pfd = {.fd = c->fd, .events = sending ? POLLOUT : POLLIN};
        int ms = c->timeout_s > 0 ? (int)(left * 1000.0) + 1 : -1;
        int ready = poll(&pfd, 1, ms);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0)
            continue;
        ssize_t got = sending ? send(c->fd, p + done, n - done, MSG_NOSIGNAL)
                              : recv(c->fd, p + done, n - done, 0);
        if (got == 0)
            return cx_fail(CX_ERUNTIME, "the store at %s closed the connection (%s)%s", c->where,
                           what, !sending && done == 0 ? ": the server is gone, or it refused "
                           "this process's proof of the run's secret" : "");
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                continue;
            return cx_fail(CX_ERUNTIME, "talking to the store at %s failed (%s): %s", c->where,
                           what, strerror(errno));
        }
        done += (size_t)got;
    }
    return CX_OK;
}

/* *greeted: the server sent its challenge (a server at its connection limit closes new
 * connections before that: worth another try). */
static cx_status handshake(cx_store_client *c, const void *secret, size_t secret_len,
                           int *greeted) {
    unsigned char hello[CX_HELLO_BYTES], answer[CX_HELLO_REPLY_BYTES], proof[CX_SHA256_BYTES];
    *greeted = 0;
    CX_TRY(transfer(c, hello, sizeof hello, 0, "waiting for the challenge"));
    *greeted = 1;
    if (memcmp(hello, CX_STORE_MAGIC, 8) != 0)
        return cx_fail(CX_ERUNTIME, "%s is not a codext store (wrong greeting)", c->where);
    if (cx_store_random(answer, CX_NONCE_BYTES) != 0)
        return cx_fail(CX_ERUNTIME, "no random bytes for the store's handshake");
    cx_store_proof(secret, secret_len, CX_CLIENT_TAG, hello + 8, answer + CX_NONCE_BYTES);
    CX_TRY(transfer(c, answer, sizeof answer, 1, "sending the proof"));
    CX_TRY(transfer(c, proof, sizeof proof, 0, "waiting for the server's proof"));
    unsigned char expect[CX_SHA256_BYTES];
    cx_store_proof(secret, secret_len, CX_SERVER_TAG, answer, expect);
    if (!cx_equal_secret(proof, expect, CX_SHA256_BYTES))
        return cx_fail(CX_ERUNTIME, "the store at %s does not know this run's secret (another "
                       "run's store on the same port?)", c->where);
    return CX_OK;
}

cx_status cx_store_connect(const char *host, int port, const void *secret, size_t secret_len,
                           double timeout_s, cx_store_client **out) {
    *out = NULL;
    if (secret_len < CX_STORE_MIN_SECRET || secret_len > CX_STORE_MAX_SECRET)
        return cx_fail(CX_EINVAL, "the store secret must hold %d to %d bytes, got %zu",
                       CX_STORE_MIN_SECRET, CX_STORE_MAX_SECRET, secret_len);
    if (port < 1 || port > 65535)
        return cx_fail(CX_EINVAL, "store port %d is outside 1..65535", port);
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *found = NULL;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    int gai = getaddrinfo(host, service, &hints, &found);
    if (gai != 0)
        return cx_fail(CX_EINVAL, "cannot resolve the store's host %s: %s", host,
                       gai_strerror(gai));
    cx_store_client *c = calloc(1, sizeof *c);
    if (!c) {
        freeaddrinfo(found);
        return cx_fail(CX_ENOMEM, "out of memory for a store client");
    }
    c->fd = -1;
    c->timeout_s = timeout_s;
    snprintf(c->where, sizeof c->where, "%s:%d", host, port);
    double deadline = cx_store_now() + timeout_s;
    for (;;) {
        cx_status st = CX_OK;
        int greeted = 0;
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0 || connect(c->fd, found->ai_addr, found->ai_addrlen) != 0) {
            st = cx_fail(CX_ERUNTIME, "cannot reach the store at %s within %.1f s: %s",
                         c->where, timeout_s, strerror(errno));
        } else {
            int one = 1;
            setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            st = handshake(c, secret, secret_len, &greeted);
        }
        if (st == CX_OK)
            break;
        if (c->fd >= 0)
            close(c->fd);
        c->fd = -1;
        if (greeted || (timeout_s > 0 && cx_store_now() > deadline)) {
            freeaddrinfo(found);
            free(c);
            return st;
        }
        struct timespec pause = {0, 20000000L};
        nanosleep(&pause, NULL);
    }
    freeaddrinfo(found);
    *out = c;
    return CX_OK;
}

/* One request and its reply: *status, payload into value[capacity] (*n its length). */
static cx_status request(cx_store_client *c, int op, const char *key, const void *operand,
                         size_t operand_len, int *status, void *value, size_t capacity,
                         size_t *n) {
    size_t key_len = strlen(key);
    if (key_len == 0 || key_len > CX_STORE_MAX_KEY)
        return cx_fail(CX_EINVAL, "store keys hold 1 to %d bytes, got %zu", CX_STORE_MAX_KEY,
                       key_len);
    if (operand_len > CX_STORE_MAX_VALUE)
        return cx_fail(CX_EINVAL, "store values hold at most %d bytes, got %zu",
                       CX_STORE_MAX_VALUE, operand_len);
    unsigned char head[4 + 3];
    cx_wire_put_u32(head, (uint32_t)(3 + key_len + operand_len));
    head[4] = (unsigned char)op;
    cx_wire_put_u16(head + 5, (uint16_t)key_len);
    CX_TRY(transfer(c, head, sizeof head, 1, key));
    CX_TRY(transfer(c, (void *)key, key_len, 1, key));
    if (operand_len)
        CX_TRY(transfer(c, (void *)operand, operand_len, 1, key));
    unsigned char reply_head[5];
    CX_TRY(transfer(c, reply_head, sizeof reply_head, 0, key));
    size_t len = cx_wire_get_u32(reply_head);
    if (len < 1 || len > 1 + CX_STORE_MAX_VALUE)
        return cx_fail(CX_ERUNTIME, "the store at %s sent a malformed reply", c->where);
    *status = reply_head[4];
    size_t payload = len - 1;
    if (*status == CX_STORE_REPLY_ERROR) {
        char message[256];
        size_t keep = payload < sizeof message - 1 ? payload : sizeof message - 1;
        unsigned char scratch[64];
        CX_TRY(transfer(c, message, keep, 0, key));
        message[keep] = '\0';
        for (size_t left = payload - keep; left > 0;) {
            size_t take = left < sizeof scratch ? left : sizeof scratch;
            CX_TRY(transfer(c, scratch, take, 0, key));
            left -= take;
        }
        return cx_fail(CX_ERUNTIME, "the store refused '%s': %s", key, message);
    }
    if (payload > capacity)
        return cx_fail(CX_EINVAL, "the value of '%s' holds %zu bytes, more than the %zu "
                       "expected", key, payload, capacity);
    if (payload)
        CX_TRY(transfer(c, value, payload, 0, key));
    *n = payload;
    return CX_OK;
}

cx_status cx_store_set(cx_store_client *c, const char *key, const void *value, size_t n) {
    int status = CX_STORE_REPLY_ERROR;
    size_t got;
    return request(c, CX_STORE_SET, key, value, n, &status, NULL, 0, &got);
}

cx_status cx_store_get(cx_store_client *c, const char *key, double timeout_s, void *value,
                       size_t capacity, size_t *n) {
    double deadline = cx_store_now() + timeout_s;
    long pause_ns = 1000000L;
    for (;;) {
        int status = CX_STORE_REPLY_ERROR;
        CX_TRY(request(c, CX_STORE_GET, key, NULL, 0, &status, value, capacity, n));
        if (status == CX_STORE_REPLY_OK)
            return CX_OK;
        if (timeout_s > 0 && cx_store_now() > deadline)
            return cx_fail(CX_ERUNTIME, "the store key '%s' was not set within %.1f s (the rank "
                           "that should set it has stalled or failed)", key, timeout_s);
        struct timespec pause = {0, pause_ns};
        nanosleep(&pause, NULL);
        if (pause_ns < 50000000L)
            pause_ns *= 2;
    }
}

cx_status cx_store_add(cx_store_client *c, const char *key, int64_t delta, int64_t *result) {
    unsigned char operand[8], reply_value[8];
    cx_wire_put_u64(operand, (uint64_t)delta);
    int status = CX_STORE_REPLY_ERROR;
    size_t n = 0;
    CX_TRY(request(c, CX_STORE_ADD, key, operand, 8, &status, reply_value, 8, &n));
    if (n != 8)
        return cx_fail(CX_ERUNTIME, "the store sent a counter of %zu bytes", n);
    *result = (int64_t)cx_wire_get_u64(reply_value);
    return CX_OK;
}

void cx_store_close(cx_store_client *c) {
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}
