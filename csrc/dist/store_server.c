/* The store's server (protocol in store.h): one thread, non-blocking sockets under poll(),
 * every connection with bounded buffers, so a slow, silent or malformed peer costs only
 * its own connection. */
#include "store.h"
#include "store_wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
    unsigned char key[CX_STORE_MAX_KEY];
    size_t key_len;
    unsigned char *value;
    size_t n;
} entry;

typedef struct {
    int fd;
    int authenticated;
    double deadline;                 /* the handshake must be done by then */
    unsigned char nonce[CX_NONCE_BYTES];
    unsigned char head[CX_HELLO_REPLY_BYTES]; /* handshake reply, or the 4-byte frame length */
    size_t head_len;
    unsigned char *body;             /* [frame] once the length is known */
    size_t frame, body_len;
    unsigned char *out;              /* pending reply */
    size_t out_len, out_sent;
} connection;

struct cx_store_server {
    int listen_fd, wake[2], port;
    unsigned char secret[CX_STORE_MAX_SECRET];
    size_t secret_len;
    pthread_t thread;
    connection conns[CX_STORE_MAX_CONNECTIONS];
    int n_conns;
    entry *entries;
    int n_entries;
    _Atomic int64_t accepted, refused, authenticated;
};

/* ---- table ------------------------------------------------------------------------------ */

static entry *find(cx_store_server *s, const unsigned char *key, size_t key_len) {
    for (int i = 0; i < s->n_entries; i++)
        if (s->entries[i].key_len == key_len && memcmp(s->entries[i].key, key, key_len) == 0)
            return &s->entries[i];
    return NULL;
}

/* The entry for key, created empty if missing; NULL when the table is full. */
static entry *find_or_add(cx_store_server *s, const unsigned char *key, size_t key_len) {
    entry *e = find(s, key, key_len);
    if (e || s->n_entries >= CX_STORE_MAX_KEYS)
        return e;
    e = &s->entries[s->n_entries++];
    memcpy(e->key, key, key_len);
    e->key_len = key_len;
    e->value = NULL;
    e->n = 0;
    return e;
}

/* ---- connections ---------------------------------------------------------------------------- */

static void drop(cx_store_server *s, int i, int refused) {
    connection *c = &s->conns[i];
    /* counted before the close: a refused peer that sees its connection end then reads the
     * count already raised */
    if (refused)
        atomic_fetch_add(&s->refused, 1);
    close(c->fd);
    free(c->body);
    free(c->out);
    s->conns[i] = s->conns[--s->n_conns];
}

/* Queues a reply frame: status | payload. 0 on success. */
static int reply(connection *c, unsigned char status, const void *payload, size_t n) {
    c->out = malloc(4 + 1 + n);
    if (!c->out)
        return -1;
    cx_wire_put_u32(c->out, (uint32_t)(1 + n));
    c->out[4] = status;
    if (n)
        memcpy(c->out + 5, payload, n);
    c->out_len = 5 + n;
    c->out_sent = 0;
    return 0;
}

static int reply_error(connection *c, const char *message) {
    return reply(c, CX_STORE_REPLY_ERROR, message, strlen(message));
}

/* Handles one complete request frame; -1 when it is malformed (the caller drops the
 * connection). */
static int handle(cx_store_server *s, connection *c) {
    const unsigned char *p = c->body;
    size_t n = c->frame;
    if (n < 3)
        return -1;
    int op = p[0];
    size_t key_len = cx_wire_get_u16(p + 1);
    if (key_len == 0 || key_len > CX_STORE_MAX_KEY || 3 + key_len > n)
        return -1;
    const unsigned char *key = p + 3, *operand = p + 3 + key_len;
    size_t operand_len = n - 3 - key_len;
    if (op == CX_STORE_SET) {
        if (operand_len > CX_STORE_MAX_VALUE)
            return -1;
        entry *e = find_or_add(s, key, key_len);
        if (!e)
            return reply_error(c, "the store is full");
        unsigned char *copy = malloc(operand_len ? operand_len : 1);
        if (!copy)
            return reply_error(c, "the store is out of memory");
        memcpy(copy, operand, operand_len);
        free(e->value);
        e->value = copy;
        e->n = operand_len;
        return reply(c, CX_STORE_REPLY_OK, NULL, 0);
    }
    if (op == CX_STORE_GET) {
        if (operand_len)
            return -1;
        entry *e = find(s, key, key_len);
        if (!e || !e->value)
            return reply(c, CX_STORE_REPLY_MISSING, NULL, 0);
        return reply(c, CX_STORE_REPLY_OK, e->value, e->n);
    }
    if (op == CX_STORE_ADD) {
        if (operand_len != 8)
            return -1;
        entry *e = find_or_add(s, key, key_len);
        if (!e)
            return reply_error(c, "the store is full");
        if (e->value && e->n != 8)
            return reply_error(c, "ADD on a key whose value is not a counter");
        if (!e->value && !(e->value = calloc(1, 8)))
            return reply_error(c, "the store is out of memory");
        e->n = 8;
        /* wrap-around on overflow (unsigned arithmetic, no UB) */
        uint64_t sum = cx_wire_get_u64(e->value) + cx_wire_get_u64(operand);
        cx_wire_put_u64(e->value, sum);
        return reply(c, CX_STORE_REPLY_OK, e->value, 8);
    }
    return -1;
}

/* Reads what is available; -1: drop the connection (closed, malformed, refused). */
static int on_readable(cx_store_server *s, connection *c) {
    for (;;) {
        if (c->out)
            return 0; /* one request at a time: the reply goes first */
        unsigned char *dst;
        size_t want;
        if (!c->authenticated) {
            dst = c->head + c->head_len;
            want = CX_HELLO_REPLY_BYTES - c->head_len;
        } else if (c->head_len < 4) {
            dst = c->head + c->head_len;
            want = 4 - c->head_len;
        } else {
            dst = c->body + c->body_len;
            want = c->frame - c->body_len;
        }
        ssize_t got = recv(c->fd, dst, want, 0);
        if (got == 0)
            return -1;
        if (got < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
        if (!c->authenticated) {
            c->head_len += (size_t)got;
            if (c->head_len < CX_HELLO_REPLY_BYTES)
                continue;
            unsigned char expect[CX_SHA256_BYTES];
            cx_store_proof(s->secret, s->secret_len, CX_CLIENT_TAG, c->nonce, expect);
            if (!cx_equal_secret(expect, c->head + CX_NONCE_BYTES, CX_SHA256_BYTES))
                return -1;
            unsigned char proof[CX_SHA256_BYTES];
            cx_store_proof(s->secret, s->secret_len, CX_SERVER_TAG, c->head, proof);
            c->out = malloc(CX_SHA256_BYTES);
            if (!c->out)
                return -1;
            memcpy(c->out, proof, CX_SHA256_BYTES);
            c->out_len = CX_SHA256_BYTES;
            c->out_sent = 0;
            c->authenticated = 1;
            c->head_len = 0;
            atomic_fetch_add(&s->authenticated, 1);
            continue;
        }
        if (c->head_len < 4) {
            c->head_len += (size_t)got;
            if (c->head_len < 4)
                continue;
            c->frame = cx_wire_get_u32(c->head);
            if (c->frame < 3 || c->frame > CX_STORE_MAX_FRAME)
                return -1;
            c->body = malloc(c->frame);
            c->body_len = 0;
            if (!c->body)
                return -1;
            continue;
        }
        c->body_len += (size_t)got;
        if (c->body_len < c->frame)
            continue;
        int rc = handle(s, c);
        free(c->body);
        c->body = NULL;
        c->head_len = 0;
        if (rc < 0)
            return -1;
    }
}

static int on_writable(connection *c) {
    while (c->out && c->out_sent < c->out_len) {
        ssize_t sent = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
        if (sent < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
        c->out_sent += (size_t)sent;
    }
    free(c->out);
    c->out = NULL;
    return 0;
}

static void accept_all(cx_store_server *s) {
    for (;;) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        atomic_fetch_add(&s->accepted, 1);
        if (s->n_conns >= CX_STORE_MAX_CONNECTIONS) {
            close(fd);
            atomic_fetch_add(&s->refused, 1);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        connection *c = &s->conns[s->n_conns];
        memset(c, 0, sizeof *c);
        c->fd = fd;
        c->deadline = cx_store_now() + CX_STORE_AUTH_TIMEOUT_S;
        unsigned char hello[CX_HELLO_BYTES];
        if (cx_store_random(c->nonce, CX_NONCE_BYTES) != 0) {
            close(fd);
            continue;
        }
        memcpy(hello, CX_STORE_MAGIC, 8);
        memcpy(hello + 8, c->nonce, CX_NONCE_BYTES);
        c->out = malloc(CX_HELLO_BYTES);
        if (!c->out) {
            close(fd);
            continue;
        }
        memcpy(c->out, hello, CX_HELLO_BYTES);
        c->out_len = CX_HELLO_BYTES;
        s->n_conns++;
        if (on_writable(c) < 0)
            drop(s, s->n_conns - 1, 1);
    }
}

static void *serve(void *arg) {
    cx_store_server *s = arg;
    struct pollfd fds[CX_STORE_MAX_CONNECTIONS + 2];
    for (;;) {
        fds[0] = (struct pollfd){.fd = s->wake[0], .events = POLLIN};
        fds[1] = (struct pollfd){.fd = s->listen_fd, .events = POLLIN};
        int n = s->n_conns;
        for (int i = 0; i < n; i++)
            fds[2 + i] = (struct pollfd){.fd = s->conns[i].fd,
                                         .events = s->conns[i].out ? POLLOUT : POLLIN};
        if (poll(fds, (nfds_t)(2 + n), 200) < 0 && errno != EINTR)
            break;
        if (fds[0].revents)
            break;
        double now = cx_store_now();
        /* back to front: drop() moves the last connection into the freed place */
        for (int i = n - 1; i >= 0; i--) {
            connection *c = &s->conns[i];
            short ev = fds[2 + i].revents;
            int bad = (ev & (POLLERR | POLLNVAL)) != 0;
            if (!bad && (ev & POLLOUT))
                bad = on_writable(c) < 0;
            if (!bad && (ev & (POLLIN | POLLHUP)))
                bad = on_readable(s, c) < 0;
            if (!bad && !c->authenticated && now > c->deadline)
                bad = 1;
            if (bad)
                drop(s, i, !c->authenticated);
        }
        if (fds[1].revents & POLLIN)
            accept_all(s);
    }
    return NULL;
}

/* ---- start / stop ---------------------------------------------------------------------------- */

cx_status cx_store_server_start(const char *host, int port, const void *secret,
                                size_t secret_len, cx_store_server **out) {
    *out = NULL;
    if (secret_len < CX_STORE_MIN_SECRET || secret_len > CX_STORE_MAX_SECRET)
        return cx_fail(CX_EINVAL, "the store secret must hold %d to %d bytes, got %zu",
                       CX_STORE_MIN_SECRET, CX_STORE_MAX_SECRET, secret_len);
    if (port < 0 || port > 65535)
        return cx_fail(CX_EINVAL, "port %d is outside 0..65535", port);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1)
        return cx_fail(CX_EINVAL, "store address %s is not a numeric IPv4 address", host);
    cx_store_server *s = calloc(1, sizeof *s);
    if (!s)
        return cx_fail(CX_ENOMEM, "out of memory for the store");
    s->entries = calloc(CX_STORE_MAX_KEYS, sizeof(entry));
    s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    s->wake[0] = s->wake[1] = -1;
    memcpy(s->secret, secret, secret_len);
    s->secret_len = secret_len;
    cx_status st = CX_OK;
    if (!s->entries)
        st = cx_fail(CX_ENOMEM, "out of memory for the store");
    else if (s->listen_fd < 0)
        st = cx_fail(CX_ERUNTIME, "cannot make the store's socket: %s", strerror(errno));
    if (st == CX_OK) {
        int one = 1;
        setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(s->listen_fd, (struct sockaddr *)&addr, sizeof addr) != 0)
            st = cx_fail(CX_ERUNTIME, "cannot bind the store to %s:%d: %s%s", host, port,
                         strerror(errno), errno == EADDRINUSE ? " (the port is taken: choose "
                         "another master port, or 0 to let codext pick one)" : "");
        else if (listen(s->listen_fd, 64) != 0)
            st = cx_fail(CX_ERUNTIME, "cannot listen on %s:%d: %s", host, port, strerror(errno));
    }
    if (st == CX_OK) {
        socklen_t len = sizeof addr;
        getsockname(s->listen_fd, (struct sockaddr *)&addr, &len);
        s->port = ntohs(addr.sin_port);
        if (pipe2(s->wake, O_CLOEXEC) != 0)
            st = cx_fail(CX_ERUNTIME, "cannot make the store's wake pipe: %s", strerror(errno));
    }
    if (st == CX_OK && pthread_create(&s->thread, NULL, serve, s) != 0)
        st = cx_fail(CX_ERUNTIME, "cannot start the store's thread");
    if (st != CX_OK) {
        if (s->listen_fd >= 0)
            close(s->listen_fd);
        if (s->wake[0] >= 0) {
            close(s->wake[0]);
            close(s->wake[1]);
        }
        free(s->entries);
        free(s);
        return st;
    }
    *out = s;
    return CX_OK;
}

int cx_store_server_port(const cx_store_server *s) { return s->port; }

void cx_store_server_stats(const cx_store_server *s, int64_t *accepted, int64_t *refused,
                           int64_t *authenticated) {
    *accepted = atomic_load(&((cx_store_server *)s)->accepted);
    *refused = atomic_load(&((cx_store_server *)s)->refused);
    *authenticated = atomic_load(&((cx_store_server *)s)->authenticated);
}

void cx_store_server_stop(cx_store_server *s) {
    if (!s)
        return;
    char byte = 1;
    while (write(s->wake[1], &byte, 1) < 0 && errno == EINTR) {
    }
    pthread_join(s->thread, NULL);
    while (s->n_conns > 0)
        drop(s, s->n_conns - 1, 0);
    for (int i = 0; i < s->n_entries; i++)
        free(s->entries[i].value);
    free(s->entries);
    close(s->listen_fd);
    close(s->wake[0]);
    close(s->wake[1]);
    memset(s->secret, 0, sizeof s->secret);
    free(s);
}
