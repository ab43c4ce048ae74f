/* The CUDA emulator's NCCL (include/nccl.h; docs/emulator.md, "The emulated NCCL").
 *
 * Ranks are processes, each with its own emulator. The unique id names a POSIX
 * shared-memory segment; rank 0 creates it in ncclCommInitRankConfig, the others open it,
 * and the rank whose attach completes the world unlinks the name. The segment holds a
 * header, one control block per rank and one data slot per rank (slot_bytes each).
 *
 * A collective is cut into chunks of at most slot_bytes; chunk k (k = 1, 2, ... over the
 * communicator's life) goes through two steps on every rank:
 *   post:     once every rank has consumed chunk k - 1 (so nobody still reads the slot),
 *             copy this rank's input (from device memory) into its slot, write what the
 *             call is (kind, root, count, bytes), then posted = k;
 *   complete: once every rank has posted k, check that all describe the same call, compute
 *             the result from the slots in rank order 0, 1, ..., W-1 (all-reduce: the
 *             sum, or for ncclAvg the sum of x * float(1/W) as NCCL's PreMulSum computes
 *             it; broadcast: the root's bytes), write it to device memory, consumed = k.
 * Every step is taken by whoever polls: ncclCommGetAsyncError, cudaStreamQuery on the
 * collective's stream (cudaErrorNotReady until it completes) and the runtime's stream
 * operations, which wait for it (emu_internal.h, stream hooks). Nothing spins in a call
 * that queues work: a rank that never arrives leaves the others polling until their
 * caller's watchdog gives up and calls ncclCommAbort, which marks the segment aborted so
 * every other rank's next poll reports ncclRemoteError.
 *
 * Non-blocking mode (config->blocking == 0): init and each collective return
 * ncclInProgress; ncclCommGetAsyncError then reports ncclInProgress until the init is
 * complete (every rank attached), and ncclSuccess once a queued collective is accepted.
 * Blocking mode waits in ncclCommInitRankConfig. One collective per communicator is
 * pending at a time (a second call first finishes the first, as a stream would). All
 * state is guarded by one mutex; waits release it between polls. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <set>

#include "emu_internal.h"
#include "include/nccl.h"

namespace {

constexpr uint32_t READY = 0x4e43434cu; /* "NCCL" */
constexpr char ID_PREFIX[] = "cx-emu-nccl:";
constexpr int MAX_RANKS = 64;

enum kind_t : uint32_t { KIND_SUM = 1, KIND_AVG = 2, KIND_BCAST = 3 };

struct rank_block { /* in the segment: written by its rank, read by all */
    std::atomic<uint64_t> posted, consumed;
    uint32_t kind;
    int32_t root;
    uint64_t count, bytes; /* the whole call's element count; this chunk's bytes */
};

struct header {
    std::atomic<uint32_t> ready;
    int32_t world;
    uint64_t slot_bytes;
    std::atomic<int32_t> attached;
    std::atomic<int32_t> aborted_by; /* rank + 1 of the first rank that aborted, else 0 */
    rank_block ranks[MAX_RANKS];
};

struct pending_op {
    int active;
    kind_t kind;
    int root;
    cudaStream_t stream;
    const char *send; /* device memory */
    char *recv;       /* device memory */
    size_t count, bytes, done;
    int posted; /* the current chunk is posted */
};

size_t slot_bytes_for(int world) {
    size_t cap = ((size_t)16 << 20) / (size_t)world;
    cap = cap > ((size_t)1 << 20) ? ((size_t)1 << 20) : cap;
    return cap & ~(size_t)4095;
}

size_t segment_bytes(int world) { return sizeof(header) + (size_t)world * slot_bytes_for(world); }

} // namespace

struct ncclComm {
    int rank, world, blocking;
    char name[NCCL_UNIQUE_ID_BYTES];
    int created;      /* this rank created the segment (it unlinks it if the world never forms) */
    int counted;      /* this rank's attach is counted */
    header *hdr;      /* NULL until mapped */
    ncclResult_t state; /* ncclInProgress (init or a call being accepted), ncclSuccess or an error */
    char last_error[256];
    uint64_t seq;     /* chunks this rank has completed */
    pending_op op;
};

namespace {

std::mutex lock;               /* guards everything below and every ncclComm */
std::set<ncclComm *> live;     /* for the stream hooks */
char global_error[256];        /* ncclGetLastError(NULL) */

char *slot(const ncclComm *c, int r) {
    return reinterpret_cast<char *>(c->hdr) + sizeof(header) + (size_t)r * c->hdr->slot_bytes;
}

ncclResult_t set_error(ncclComm *c, ncclResult_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
ncclResult_t set_error(ncclComm *c, ncclResult_t code, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(c ? c->last_error : global_error, sizeof global_error, fmt, args);
    va_end(args);
    if (c) {
        c->state = code;
        c->op.active = 0; /* a failed collective is dropped: its output is not written */
    }
    return code;
}

void unlink_name(const ncclComm *c) { shm_unlink(c->name); }

/* Init: map the segment (rank 0 created it already), count this rank in; success once
 * every rank is attached. */
void progress_init(ncclComm *c) {
    size_t bytes = segment_bytes(c->world);
    if (!c->hdr) {
        int fd = shm_open(c->name, O_RDWR, 0600);
        if (fd < 0) {
            if (errno != ENOENT)
                set_error(c, ncclSystemError, "shm_open(%s): %s", c->name, strerror(errno));
            return; /* rank 0 has not created it yet */
        }
        struct stat st;
        if (fstat(fd, &st) != 0 || (size_t)st.st_size != bytes) {
            int size_known = fstat(fd, &st) == 0 && st.st_size != 0;
            close(fd);
            if (size_known)
                set_error(c, ncclInvalidUsage, "segment %s has %lld bytes, %zu expected for %d "
                          "ranks: the ranks disagree on nranks", c->name, (long long)st.st_size,
                          bytes, c->world);
            return;
        }
        void *map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (map == MAP_FAILED) {
            set_error(c, ncclSystemError, "mmap of %s: %s", c->name, strerror(errno));
            return;
        }
        c->hdr = static_cast<header *>(map);
    }
    header *h = c->hdr;
    if (h->ready.load(std::memory_order_acquire) != READY)
        return;
    if (h->world != c->world) {
        set_error(c, ncclInvalidUsage, "rank %d was given nranks %d, rank 0 %d", c->rank,
                  c->world, h->world);
        return;
    }
    if (!c->counted) {
        c->counted = 1;
        if (h->attached.fetch_add(1) + 1 == c->world)
            unlink_name(c); /* everyone has it open: nothing stays in /dev/shm */
    }
    if (h->attached.load() == c->world)
        c->state = ncclSuccess;
}

/* One step of the pending collective; returns when it must wait for another rank. */
void progress_op(ncclComm *c) {
    pending_op *op = &c->op;
    header *h = c->hdr;
    while (op->active) {
        uint64_t k = c->seq + 1;
        size_t chunk = op->bytes - op->done < h->slot_bytes ? op->bytes - op->done : h->slot_bytes;
        rank_block *mine = &h->ranks[c->rank];
        if (!op->posted) {
            for (int r = 0; r < c->world; r++)
                if (h->ranks[r].consumed.load(std::memory_order_acquire) < k - 1)
                    return;
            if (op->kind != KIND_BCAST || c->rank == op->root) {
                std::lock_guard<std::recursive_mutex> device(cx_emu::big_lock());
                cx_emu::device_memory_open();
                memcpy(slot(c, c->rank), op->send + op->done, chunk);
                cx_emu::device_memory_close();
            }
            mine->kind = op->kind;
            mine->root = op->root;
            mine->count = op->count;
            mine->bytes = chunk;
            mine->posted.store(k, std::memory_order_release);
            op->posted = 1;
        }
        for (int r = 0; r < c->world; r++)
            if (h->ranks[r].posted.load(std::memory_order_acquire) < k)
                return;
        for (int r = 0; r < c->world; r++) {
            const rank_block *b = &h->ranks[r];
            if (b->kind != mine->kind || b->root != mine->root || b->count != mine->count ||
                b->bytes != mine->bytes) {
                static const char *const names[] = {"?", "all-reduce (sum)", "all-reduce (avg)",
                                                    "broadcast"};
                set_error(c, ncclInvalidUsage, "collective mismatch: rank %d called %s of %llu "
                          "elements (root %d), rank %d %s of %llu (root %d)", c->rank,
                          names[mine->kind], (unsigned long long)mine->count, mine->root, r,
                          names[b->kind <= 3 ? b->kind : 0], (unsigned long long)b->count, b->root);
                return;
            }
        }
        {
            std::lock_guard<std::recursive_mutex> device(cx_emu::big_lock());
            cx_emu::device_memory_open();
            char *out = op->recv + op->done;
            if (op->kind == KIND_BCAST) {
                memcpy(out, slot(c, op->root), chunk);
            } else {
                size_t n = chunk / sizeof(float);
                float scale = op->kind == KIND_AVG ? (float)(1.0 / c->world) : 1.0f;
                for (size_t i = 0; i < n; i++) {
                    float acc = 0.0f;
                    for (int r = 0; r < c->world; r++) {
                        float x;
                        memcpy(&x, slot(c, r) + i * sizeof(float), sizeof x);
                        if (op->kind == KIND_AVG)
                            x = x * scale;
                        acc = r == 0 ? x : acc + x;
                    }
                    memcpy(out + i * sizeof(float), &acc, sizeof acc);
                }
            }
            cx_emu::device_memory_close();
        }
        mine->consumed.store(k, std::memory_order_release);
        c->seq = k;
        op->done += chunk;
        op->posted = 0;
        if (op->done == op->bytes)
            op->active = 0;
    }
}

/* Everything a poll does: notice an abort elsewhere, then init or the pending call. */
void progress(ncclComm *c) {
    if (c->state != ncclSuccess && c->state != ncclInProgress)
        return;
    if (c->hdr && c->hdr->ready.load() == READY) {
        int by = c->hdr->aborted_by.load();
        if (by) {
            set_error(c, ncclRemoteError, "rank %d aborted the communicator (ncclCommAbort)",
                      by - 1);
            return;
        }
    }
    if (!c->counted || c->hdr->attached.load() < c->world) {
        progress_init(c);
        return;
    }
    if (c->state == ncclInProgress) /* a call accepted in non-blocking mode */
        c->state = ncclSuccess;
    progress_op(c);
}

int on_stream(const ncclComm *c, cudaStream_t stream) {
    return c->op.active && (c->op.stream == stream || !stream || stream == cudaStreamLegacy);
}

int hook_pending(cudaStream_t stream) {
    std::lock_guard<std::mutex> hold(lock);
    int pending = 0;
    for (ncclComm *c : live)
        if (on_stream(c, stream)) {
            progress(c);
            pending |= on_stream(c, stream);
        }
    return pending;
}

void hook_finish(cudaStream_t stream) {
    while (hook_pending(stream)) {
        struct timespec pause = {0, 200000};
        nanosleep(&pause, NULL);
    }
}

void install_hooks(void) {
    static std::once_flag once;
    std::call_once(once, [] { cx_emu::set_stream_hooks(hook_pending, hook_finish); });
}

ncclResult_t check_comm(ncclComm *c, const char *call) {
    if (!live.count(c))
        return set_error(nullptr, ncclInvalidArgument, "%s: %p is not a live communicator", call,
                         (void *)c);
    if (c->state == ncclInProgress && (!c->counted || c->hdr->attached.load() < c->world))
        return set_error(nullptr, ncclInvalidUsage, "%s: the communicator's init has not "
                         "completed (poll ncclCommGetAsyncError)", call);
    return c->state;
}

ncclResult_t enqueue(ncclComm *c, kind_t kind, int root, const void *send, void *recv,
                     size_t count, size_t elem, cudaStream_t stream, const char *call) {
    ncclResult_t st = check_comm(c, call);
    if (st != ncclSuccess && st != ncclInProgress)
        return st;
    if (root < 0 || root >= c->world)
        return set_error(nullptr, ncclInvalidArgument, "%s: root %d of %d ranks", call, root,
                         c->world);
    size_t bytes = count * elem;
    char why[256];
    {
        std::lock_guard<std::recursive_mutex> device(cx_emu::big_lock());
        if (!cx_emu::stream_valid(stream))
            return set_error(nullptr, ncclInvalidArgument, "%s: stream %p is not live", call,
                             (void *)stream);
        if (bytes && ((kind != KIND_BCAST || c->rank == root) &&
                      !cx_emu::device_range_ok(send, bytes, "sendbuff", why, sizeof why)))
            return set_error(nullptr, ncclInvalidArgument, "%s: %s", call, why);
        if (bytes && !cx_emu::device_range_ok(recv, bytes, "recvbuff", why, sizeof why))
            return set_error(nullptr, ncclInvalidArgument, "%s: %s", call, why);
    }
    while (c->op.active) { /* one pending call: the earlier one completes first */
        lock.unlock();
        hook_finish(c->op.stream);
        lock.lock();
        if (!live.count(c))
            return ncclInvalidUsage;
    }
    if (c->state != ncclSuccess && c->state != ncclInProgress)
        return c->state;
    if (!bytes)
        return ncclSuccess;
    c->op = pending_op{1, kind, root, stream, static_cast<const char *>(send),
                       static_cast<char *>(recv), count, bytes, 0, 0};
    progress_op(c);
    if (!c->blocking) {
        c->state = ncclInProgress; /* accepted at the next ncclCommGetAsyncError */
        return ncclInProgress;
    }
    return ncclSuccess;
}

void release(ncclComm *c, int abort) {
    live.erase(c);
    if (c->hdr) {
        if (abort && c->hdr->ready.load() == READY) {
            int32_t none = 0;
            c->hdr->aborted_by.compare_exchange_strong(none, c->rank + 1);
        }
        if (c->created && c->hdr->attached.load() < c->world)
            unlink_name(c); /* the world never formed: nobody else will */
        munmap(c->hdr, segment_bytes(c->world));
    } else if (c->created) {
        unlink_name(c);
    }
    delete c;
}

} // namespace

ncclResult_t ncclGetVersion(int *version) {
    if (!version)
        return ncclInvalidArgument;
    *version = NCCL_VERSION_CODE;
    return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    std::lock_guard<std::mutex> hold(lock);
    if (!id)
        return set_error(nullptr, ncclInvalidArgument, "ncclGetUniqueId: NULL id");
    unsigned char random[8];
    if (getrandom(random, sizeof random, 0) != (ssize_t)sizeof random)
        return set_error(nullptr, ncclSystemError, "getrandom: %s", strerror(errno));
    memset(id->internal, 0, sizeof id->internal);
    int n = snprintf(id->internal, sizeof id->internal, "%s/cx-emu-nccl-%d-", ID_PREFIX,
                     (int)getpid());
    for (unsigned char b : random)
        n += snprintf(id->internal + n, sizeof id->internal - (size_t)n, "%02x", b);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t *out, int nranks, ncclUniqueId id, int rank,
                                    ncclConfig_t *config) {
    install_hooks();
    std::unique_lock<std::mutex> hold(lock);
    if (!out)
        return set_error(nullptr, ncclInvalidArgument, "ncclCommInitRankConfig: NULL comm");
    *out = nullptr;
    if (nranks < 1 || nranks > MAX_RANKS || rank < 0 || rank >= nranks)
        return set_error(nullptr, ncclInvalidArgument, "ncclCommInitRankConfig: rank %d of %d "
                         "(the emulator takes 1..%d ranks)", rank, nranks, MAX_RANKS);
    if (config && (config->magic != 0xcafebeef || config->size < sizeof(ncclConfig_t)))
        return set_error(nullptr, ncclInvalidArgument, "ncclCommInitRankConfig: the config was "
                         "not initialised with NCCL_CONFIG_INITIALIZER");
    if (strncmp(id.internal, ID_PREFIX, sizeof ID_PREFIX - 1) != 0 ||
        !memchr(id.internal, 0, sizeof id.internal))
        return set_error(nullptr, ncclInvalidArgument, "ncclCommInitRankConfig: not a unique "
                         "id of the emulated NCCL");
    ncclComm *c = new ncclComm();
    c->rank = rank;
    c->world = nranks;
    c->blocking = !config || config->blocking != 0; /* NCCL's default is blocking */
    c->state = ncclInProgress;
    snprintf(c->name, sizeof c->name, "%s", id.internal + sizeof ID_PREFIX - 1);
    if (rank == 0) {
        size_t bytes = segment_bytes(nranks);
        int fd = shm_open(c->name, O_RDWR | O_CREAT | O_EXCL, 0600);
        void *map = MAP_FAILED;
        if (fd >= 0 && ftruncate(fd, (off_t)bytes) == 0)
            map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        int err = errno;
        if (fd >= 0)
            close(fd);
        if (map == MAP_FAILED) {
            if (fd >= 0)
                shm_unlink(c->name);
            delete c;
            return set_error(nullptr, ncclSystemError, "ncclCommInitRankConfig: segment %s: %s",
                             id.internal + sizeof ID_PREFIX - 1, strerror(err));
        }
        c->created = 1;
        c->hdr = new (map) header();
        c->hdr->world = nranks;
        c->hdr->slot_bytes = slot_bytes_for(nranks);
        c->hdr->ready.store(READY, std::memory_order_release);
    }
    live.insert(c);
    progress(c);
    while (c->blocking && c->state == ncclInProgress) {
        hold.unlock();
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
        hold.lock();
        progress(c);
    }
    *out = c;
    return c->blocking ? c->state : ncclInProgress;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *async_error) {
    std::lock_guard<std::mutex> hold(lock);
    if (!live.count(comm) || !async_error)
        return set_error(nullptr, ncclInvalidArgument, "ncclCommGetAsyncError: %s",
                         async_error ? "not a live communicator" : "NULL result");
    progress(comm);
    *async_error = comm->state;
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream) {
    std::lock_guard<std::mutex> hold(lock);
    if (datatype != ncclFloat32 || (op != ncclSum && op != ncclAvg))
        return set_error(nullptr, ncclInvalidArgument, "ncclAllReduce: the emulator reduces "
                         "ncclFloat32 with ncclSum or ncclAvg only (datatype %d, op %d)",
                         (int)datatype, (int)op);
    return enqueue(comm, op == ncclAvg ? KIND_AVG : KIND_SUM, 0, sendbuff, recvbuff, count,
                   sizeof(float), stream, "ncclAllReduce");
}

ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream) {
    std::lock_guard<std::mutex> hold(lock);
    static const size_t sizes[] = {1, 1, 4, 4, 8, 8, 2, 4, 8, 2};
    if ((unsigned)datatype >= sizeof sizes / sizeof *sizes)
        return set_error(nullptr, ncclInvalidArgument, "ncclBroadcast: datatype %d", (int)datatype);
    return enqueue(comm, KIND_BCAST, root, sendbuff, recvbuff, count, sizes[datatype], stream,
                   "ncclBroadcast");
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
    std::lock_guard<std::mutex> hold(lock);
    if (!live.count(comm))
        return set_error(nullptr, ncclInvalidArgument, "ncclCommFinalize: not a live communicator");
    return comm->op.active ? ncclInProgress : comm->state; /* nothing else is in flight */
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    std::lock_guard<std::mutex> hold(lock);
    if (!comm)
        return ncclSuccess;
    if (!live.count(comm))
        return set_error(nullptr, ncclInvalidArgument, "ncclCommDestroy: not a live communicator");
    release(comm, 0);
    return ncclSuccess;
}

/* Marks the segment aborted (every other rank's next poll reports ncclRemoteError),
 * drops a pending call (local waiters in the stream hooks stop waiting) and frees. */
ncclResult_t ncclCommAbort(ncclComm_t comm) {
    std::lock_guard<std::mutex> hold(lock);
    if (!comm)
        return ncclSuccess;
    if (!live.count(comm))
        return set_error(nullptr, ncclInvalidArgument, "ncclCommAbort: not a live communicator");
    release(comm, 1);
    return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t result) {
    switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
    }
}

const char *ncclGetLastError(ncclComm_t comm) {
    std::lock_guard<std::mutex> hold(lock);
    return comm && live.count(comm) && comm->last_error[0] ? comm->last_error : global_error;
}
