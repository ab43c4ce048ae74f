/* A small key-value store over TCP for the rendezvous of a run's ranks: they exchange the
 * shared-memory segment's name (and, later, NCCL's unique id) through it.
 *
 * Only peers that know the run's secret get in, and each side proves it to the other:
 *   server -> client  "CXSTORE1" | server_nonce[32]
 *   client -> server  client_nonce[32] | HMAC-SHA256(secret, "codext-store-client" | server_nonce)
 *   server -> client  HMAC-SHA256(secret, "codext-store-server" | client_nonce)
 * (a wrong proof: the server closes the connection). Nonces come from getrandom(), so a
 * recorded exchange cannot be replayed. After that, requests and replies are frames
 *   u32 length (little-endian, 1..CX_STORE_MAX_FRAME) | body
 *   request body: u8 op | u16 key_length | key | operand
 *     SET: operand = the value bytes           reply: u8 0
 *     GET: no operand                          reply: u8 0 | value, or u8 1 (missing)
 *     ADD: operand = i64 delta (little-endian) reply: u8 0 | i64 new value (a missing
 *          key counts from 0; a value that is not 8 bytes is an error)
 *   error replies: u8 2 | message
 * Anything malformed (a bad length, op, key length, operand; a handshake not finished
 * within CX_STORE_AUTH_TIMEOUT_S) closes that connection only; the server goes on. Keys
 * and values are bounded (CX_STORE_MAX_KEY, CX_STORE_MAX_VALUE, CX_STORE_MAX_KEYS), and
 * so is the number of connections.
 *
 * The server runs on its own thread, started by the launcher (or rank 0 under torchrun).
 * It binds the address it is given: the launcher passes 127.0.0.1 unless the run spans
 * several hosts. */
#ifndef CX_DIST_STORE_H
#define CX_DIST_STORE_H

#include "../core/cx.h"

#include <stddef.h>
#include <stdint.h>

#define CX_STORE_MAX_KEY 256
#define CX_STORE_MAX_VALUE 65536
#define CX_STORE_MAX_FRAME (1 + 2 + CX_STORE_MAX_KEY + CX_STORE_MAX_VALUE)
#define CX_STORE_MAX_KEYS 4096
#define CX_STORE_MAX_CONNECTIONS 256
#define CX_STORE_AUTH_TIMEOUT_S 5.0
#define CX_STORE_MIN_SECRET 16
#define CX_STORE_MAX_SECRET 256

enum { CX_STORE_SET = 1, CX_STORE_GET = 2, CX_STORE_ADD = 3 };

typedef struct cx_store_server cx_store_server;
typedef struct cx_store_client cx_store_client;

/* Binds host:port (port 0: the system picks a free one; the socket stays open, so the port
 * cannot be taken between choosing and use), listens and starts the serving thread.
 * host: a numeric IPv4 address ("127.0.0.1", "0.0.0.0"). */
cx_status cx_store_server_start(const char *host, int port, const void *secret,
                                size_t secret_len, cx_store_server **out);
int cx_store_server_port(const cx_store_server *server);
/* Counters for tests: connections accepted, refused (bad proof or malformed), served. */
void cx_store_server_stats(const cx_store_server *server, int64_t *accepted, int64_t *refused,
                           int64_t *authenticated);
/* Stops the thread, closes every socket, frees everything. */
void cx_store_server_stop(cx_store_server *server);

/* Connects (retrying until timeout_s: the server may not be up yet) and authenticates.
 * Every later call waits at most timeout_s for the server. */
cx_status cx_store_connect(const char *host, int port, const void *secret, size_t secret_len,
                           double timeout_s, cx_store_client **out);
cx_status cx_store_set(cx_store_client *c, const char *key, const void *value, size_t n);
/* Waits until the key exists (polling) or timeout_s passes; value [capacity] gets the
 * bytes, *n their count (CX_EINVAL when capacity is too small). */
cx_status cx_store_get(cx_store_client *c, const char *key, double timeout_s, void *value,
                       size_t capacity, size_t *n);
cx_status cx_store_add(cx_store_client *c, const char *key, int64_t delta, int64_t *result);
void cx_store_close(cx_store_client *c);

#endif
