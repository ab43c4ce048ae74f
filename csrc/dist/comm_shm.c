/* Shared-memory collectives for ranks on one host (see comm.h).
 *
 * Segment layout (one POSIX shared-memory object, mapped by every rank):
 *   shm_header                      control words (barrier, abort, per-rank arrival)
 *   set[2] of {slot[W], result}     each cap floats; chunk k uses set k % 2
 *
 * All-reduce of n floats, in chunks of at most cap floats; for chunk k (set s = k % 2):
 *   1. every rank copies its chunk into slot[rank] of set s
 *   2. barrier
 *   3. rank r sums the fixed slice [c r / W, c (r+1) / W) of the chunk (c its length):
 *      result[j] = ((slot[0][j] + slot[1][j]) + slot[2][j]) + ... in rank order
 *   4. barrier
 *   5. every rank copies result into its buffer
 * The sum order is fixed by the element, not by arrival or chunking: deterministic.
 * Two sets make one barrier per phase enough: a rank writes set s again only for chunk
 * k + 2, after the barrier of chunk k + 1 that every rank reaches only once it has read
 * chunk k's result. Broadcast copies the root's chunk through its slot the same way.
 *
 * Barrier: a shared arrival counter and a released-generation word. The last rank to
 * arrive resets the counter and publishes the generation; the others spin briefly and
 * then sleep on the word with a futex (the machine may have fewer cores than ranks). Each
 * rank also records the generation it has reached, so a waiter that times out can name
 * the ranks that never arrived, and checks that its missing peers are still alive. */
#include "comm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#define SHM_MAGIC 0x636f646578747368ull /* "codextsh" */
#define SHM_VERSION 1u
#define DEFAULT_CAPACITY ((size_t)1 << 20) /* floats per slot: 4 MiB */
#define SEGMENT_LIMIT ((size_t)32 << 20)
#define REASON_CAP 512
#define SPINS 2000
#define SLEEP_NS 20000000L /* futex sleep slice: 20 ms, then re-check abort and peers */

typedef struct {
    _Atomic uint64_t magic; /* written last by rank 0: the rest is initialised */
    uint32_t version, world;
    uint64_t capacity;       /* floats per slot */
    _Atomic uint32_t count;   /* ranks arrived at the current barrier */
    _Atomic uint32_t release; /* generation last released (futex word) */
    _Atomic uint32_t aborted; /* 0, 1 (reason being written), 2 (reason ready) */
    int32_t abort_rank;
    char abort_reason[REASON_CAP];
    _Atomic uint32_t arrived[CX_COMM_MAX_RANKS]; /* last barrier generation reached */
    _Atomic int32_t pid[CX_COMM_MAX_RANKS];
    _Atomic uint32_t attached;
} shm_header;

typedef struct {
    cx_comm base;
    shm_header *hdr;
    size_t map_bytes;
    float *sets;        /* set[2][W + 1][cap] */
    size_t cap;
    uint32_t gen;       /* this rank's barrier generation */
    uint64_t chunk;     /* chunks moved so far (selects the set) */
    const char *op;     /* the collective in progress, for messages */
    char name[128];
} shm_comm;

static size_t header_bytes(void) { return (sizeof(shm_header) + 63) / 64 * 64; }

size_t cx_comm_shm_segment_bytes(int world, size_t cap) {
    if (world < 1)
        world = 1;
    if (!cap) {
        cap = DEFAULT_CAPACITY;
        while (cap > 4096 && header_bytes() + 2 * (size_t)(world + 1) * cap * 4 > SEGMENT_LIMIT)
            cap /= 2;
    }
    return header_bytes() + 2 * (size_t)(world + 1) * cap * sizeof(float);
}

static size_t capacity_for(int world, size_t cap) {
    return (cx_comm_shm_segment_bytes(world, cap) - header_bytes()) / (2 * (size_t)(world + 1) * 4);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void futex_wait(_Atomic uint32_t *word, uint32_t seen) {
#ifdef __linux__
    struct timespec ts = {0, SLEEP_NS};
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, seen, &ts, NULL, 0);
#else
    (void)word;
    (void)seen;
    struct timespec ts = {0, 1000000L};
    nanosleep(&ts, NULL);
#endif
}

static void futex_wake_all(_Atomic uint32_t *word) {
#ifdef __linux__
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, 0x7fffffff, NULL, NULL, 0);
#else
    (void)word;
#endif
}

/* ---- abort ------------------------------------------------------------------------------ */

static void shm_abort(cx_comm *base, const char *reason) {
    shm_comm *c = (shm_comm *)base;
    shm_header *h = c->hdr;
    uint32_t expected = 0;
    if (atomic_compare_exchange_strong(&h->aborted, &expected, 1)) {
        h->abort_rank = c->base.rank;
        snprintf(h->abort_reason, sizeof h->abort_reason, "%s", reason);
        atomic_store(&h->aborted, 2);
    }
    /* waiters sleep on `release`: wake them so they see the abort now */
    futex_wake_all(&h->release);
}

/* The error every call returns once the communicator is aborted. */
static cx_status aborted_error(shm_comm *c) {
    shm_header *h = c->hdr;
    for (int i = 0; i < 1000 && atomic_load(&h->aborted) == 1; i++) {
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&h->aborted) != 2)
        return cx_fail(CX_ERUNTIME, "shared-memory %s on rank %d: the communicator was aborted",
                       c->op, c->base.rank);
    if (h->abort_rank == c->base.rank)
        return cx_fail(CX_ERUNTIME, "%s", h->abort_reason);
    return cx_fail(CX_ERUNTIME, "shared-memory %s on rank %d failed: rank %d aborted the run: %s",
                   c->op, c->base.rank, h->abort_rank, h->abort_reason);
}

/* ---- barrier ------------------------------------------------------------------------------ */

/* A process that has exited: no such pid, or a zombie its parent has not reaped yet. */
static int process_gone(int32_t pid) {
    if (kill(pid, 0) != 0)
        return errno == ESRCH;
#ifdef __linux__
    char path[64], text[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    const char *paren = strrchr(text, ')'); /* "pid (comm) S ...": comm may hold spaces */
    return paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
#else
    return 0;
#endif
}

/* "1, 3" for the ranks that have not reached generation gen; returns how many. */
static int missing_ranks(const shm_comm *c, uint32_t gen, char *out, size_t size, int *dead) {
    int n = 0;
    size_t len = 0;
    out[0] = '\0';
    *dead = -1;
    for (int r = 0; r < c->base.world; r++) {
        uint32_t at = atomic_load(&c->hdr->arrived[r]);
        if ((int32_t)(at - gen) >= 0)
            continue;
        n++;
        if (len < size)
            len += (size_t)snprintf(out + len, size - len, "%s%d", n > 1 ? ", " : "", r);
        int32_t pid = atomic_load(&c->hdr->pid[r]);
        if (*dead < 0 && pid > 0 && process_gone(pid))
            *dead = r;
    }
    return n;
}

static cx_status barrier(shm_comm *c) {
    shm_header *h = c->hdr;
    int world = c->base.world;
    if (atomic_load(&h->aborted))
        return aborted_error(c);
    uint32_t gen = ++c->gen;
    atomic_store(&h->arrived[c->base.rank], gen);
    uint32_t n = atomic_fetch_add(&h->count, 1) + 1;
    if (n == (uint32_t)world) {
        atomic_store(&h->count, 0);
        atomic_store(&h->release, gen);
        futex_wake_all(&h->release);
        return CX_OK;
    }
    double start = now_s(), last_check = start;
    for (long spin = 0;; spin++) {
        uint32_t released = atomic_load(&h->release);
        if ((int32_t)(released - gen) >= 0)
            return CX_OK;
        if (atomic_load(&h->aborted))
            return aborted_error(c);
        if (spin < SPINS)
            continue;
        futex_wait(&h->release, released);
        double t = now_s();
        if (t - last_check < 0.1 && !(c->base.timeout_s > 0 && t - start > c->base.timeout_s))
            continue;
        last_check = t;
        char who[256];
        int dead;
        int n_missing = missing_ranks(c, gen, who, sizeof who, &dead);
        char reason[REASON_CAP];
        if (n_missing == 0) {
            continue; /* everyone arrived: the release is on its way */
        } else if (dead >= 0) {
            snprintf(reason, sizeof reason, "shared-memory %s on rank %d failed: rank %d "
                     "(pid %d) exited without reaching it", c->op, c->base.rank, dead,
                     (int)atomic_load(&h->pid[dead]));
        } else if (c->base.timeout_s > 0 && t - start > c->base.timeout_s) {
            snprintf(reason, sizeof reason, "shared-memory %s timed out after %.1f s on rank %d: "
                     "rank%s %s did not arrive (stalled)", c->op, c->base.timeout_s,
                     c->base.rank, n_missing > 1 ? "s" : "", who);
        } else {
            continue;
        }
        shm_abort(&c->base, reason);
        return aborted_error(c);
    }
}

/* ---- collectives -------------------------------------------------------------------------- */

static float *slot(shm_comm *c, uint64_t chunk, int rank) {
    return c->sets + ((size_t)(chunk & 1) * (size_t)(c->base.world + 1) + (size_t)rank) * c->cap;
}

static int shm_aborted(cx_comm *base) {
    return atomic_load(&((shm_comm *)base)->hdr->aborted) != 0;
}

static cx_status shm_all_reduce_sum(cx_comm *base, float *data, size_t n) {
    shm_comm *c = (shm_comm *)base;
    int world = base->world, rank = base->rank;
    c->op = "all_reduce";
    if (atomic_load(&c->hdr->aborted))
        return aborted_error(c);
    if (world == 1)
        return CX_OK;
    for (size_t done = 0; done < n; done += c->cap) {
        size_t len = n - done < c->cap ? n - done : c->cap;
        uint64_t k = c->chunk++;
        memcpy(slot(c, k, rank), data + done, len * sizeof(float));
        CX_TRY(barrier(c));
        if (base->stall_next_all_reduce) { /* fault injection (comm.h): wedged mid-collective */
            base->stall_next_all_reduce = 0;
            cx_comm_stall_until_aborted(base, shm_aborted);
            return aborted_error(c);
        }
        size_t begin = len * (size_t)rank / (size_t)world;
        size_t end = len * (size_t)(rank + 1) / (size_t)world;
        float *result = slot(c, k, world);
        const float *first = slot(c, k, 0);
        for (size_t j = begin; j < end; j++)
            result[j] = first[j];
        for (int r = 1; r < world; r++) {
            const float *src = slot(c, k, r);
            for (size_t j = begin; j < end; j++)
                result[j] += src[j];
        }
        CX_TRY(barrier(c));
        memcpy(data + done, result, len * sizeof(float));
    }
    return CX_OK;
}

static cx_status shm_broadcast(cx_comm *base, void *data, size_t n_bytes, int root) {
    shm_comm *c = (shm_comm *)base;
    c->op = "broadcast";
    if (atomic_load(&c->hdr->aborted))
        return aborted_error(c);
    if (base->world == 1)
        return CX_OK;
    size_t cap_bytes = c->cap * sizeof(float);
    unsigned char *bytes = data;
    for (size_t done = 0; done < n_bytes; done += cap_bytes) {
        size_t len = n_bytes - done < cap_bytes ? n_bytes - done : cap_bytes;
        uint64_t k = c->chunk++;
        if (base->rank == root)
            memcpy(slot(c, k, root), bytes + done, len);
        CX_TRY(barrier(c));
        if (base->rank != root)
            memcpy(bytes + done, slot(c, k, root), len);
    }
    /* the root's next write into this set comes after another barrier: nothing more */
    return CX_OK;
}

static cx_status shm_barrier(cx_comm *base) {
    shm_comm *c = (shm_comm *)base;
    c->op = "barrier";
    if (base->world == 1)
        return atomic_load(&c->hdr->aborted) ? aborted_error(c) : CX_OK;
    return barrier(c);
}

static void shm_destroy(cx_comm *base) {
    shm_comm *c = (shm_comm *)base;
    if (c->hdr)
        munmap(c->hdr, c->map_bytes);
    free(c);
}

static const cx_comm_ops shm_ops = {
    .name = "shm",
    .all_reduce_sum = shm_all_reduce_sum,
    .broadcast = shm_broadcast,
    .barrier = shm_barrier,
    .abort = shm_abort,
    .destroy = shm_destroy,
};

/* ---- create --------------------------------------------------------------------------------- */

/* Rank 0 creates the segment with `*bytes`; the others open it once rank 0 has sized it
 * and get its size in *bytes (a rank that expects another world size still maps it and
 * then names the disagreement). */
/* "file:/some/dir/name" is a file-backed segment (for hosts whose /dev/shm is too small);
 * anything else a POSIX shared-memory name. */
#define FILE_PREFIX "file:"

static int is_file_backed(const char *name) {
    return strncmp(name, FILE_PREFIX, strlen(FILE_PREFIX)) == 0;
}

static int segment_open(const char *name, int flags) {
    if (is_file_backed(name))
        return open(name + strlen(FILE_PREFIX), flags | O_CLOEXEC, 0600);
    return shm_open(name, flags, 0600);
}

static void segment_unlink(const char *name) {
    if (is_file_backed(name))
        unlink(name + strlen(FILE_PREFIX));
    else
        shm_unlink(name);
}

static cx_status open_segment(const char *name, int rank, size_t *bytes_io, double timeout_s,
                              int *fd) {
    size_t bytes = *bytes_io;
    if (rank == 0) {
        *fd = segment_open(name, O_RDWR | O_CREAT | O_EXCL);
        if (*fd < 0)
            return cx_fail(CX_ERUNTIME, "cannot create the shared-memory segment %s: %s%s", name,
                           strerror(errno), errno == EEXIST ? " (a run with the same name is "
                           "going on or crashed before attaching)" : "");
        int err = ftruncate(*fd, (off_t)bytes) == 0 ? 0 : errno;
#ifdef __linux__
        /* reserve the pages now: a full /dev/shm is an error here, not a SIGBUS later */
        if (!err)
            err = posix_fallocate(*fd, 0, (off_t)bytes);
#endif
        if (err) {
            close(*fd);
            segment_unlink(name);
            return cx_fail(CX_ERUNTIME, "cannot reserve %.1f MiB of shared memory in /dev/shm "
                           "for %s: %s", (double)bytes / 1048576.0, name, strerror(err));
        }
        return CX_OK;
    }
    double start = now_s();
    for (;;) {
        *fd = segment_open(name, O_RDWR);
        if (*fd >= 0) {
            struct stat st;
            if (fstat(*fd, &st) == 0 && (size_t)st.st_size >= header_bytes()) {
                *bytes_io = (size_t)st.st_size;
                return CX_OK;
            }
            close(*fd);
        } else if (errno != ENOENT) {
            return cx_fail(CX_ERUNTIME, "rank %d cannot open the shared-memory segment %s: %s",
                           rank, name, strerror(errno));
        }
        if (timeout_s > 0 && now_s() - start > timeout_s)
            return cx_fail(CX_ERUNTIME, "rank %d: the shared-memory segment %s did not appear "
                           "within %.1f s (rank 0 stalled or failed before creating it)", rank,
                           name, timeout_s);
        struct timespec ts = {0, 2000000L};
        nanosleep(&ts, NULL);
    }
}

cx_status cx_comm_shm_create(const char *name, int rank, int world, double timeout_s,
                             size_t capacity_floats, cx_comm **out) {
    *out = NULL;
    if (world < 1 || world > CX_COMM_MAX_RANKS)
        return cx_fail(CX_EINVAL, "world size %d is outside 1..%d for the shared-memory backend",
                       world, CX_COMM_MAX_RANKS);
    if (rank < 0 || rank >= world)
        return cx_fail(CX_EINVAL, "rank %d is not in a world of %d", rank, world);
    if (!name || strlen(name) >= 120 ||
        (is_file_backed(name) ? name[strlen(FILE_PREFIX)] != '/'
                              : name[0] != '/' || strchr(name + 1, '/') != NULL))
        return cx_fail(CX_EINVAL, "shared-memory name %s must start with '/' and hold no other "
                       "'/' (or be file:/absolute/path for a file-backed segment), shorter "
                       "than 120 characters", name ? name : "(null)");
    size_t cap = capacity_for(world, capacity_floats);
    size_t bytes = cx_comm_shm_segment_bytes(world, cap);
    shm_comm *c = calloc(1, sizeof *c);
    if (!c)
        return cx_fail(CX_ENOMEM, "out of memory for a communicator");
    c->base = (cx_comm){.ops = &shm_ops, .rank = rank, .world = world, .timeout_s = timeout_s};
    c->cap = cap;
    c->op = "attach";
    snprintf(c->name, sizeof c->name, "%s", name);
    int fd = -1;
    cx_status st = open_segment(name, rank, &bytes, timeout_s, &fd);
    c->map_bytes = bytes; /* the size rank 0 made */
    if (st != CX_OK) {
        free(c);
        return st;
    }
    void *map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int map_err = errno;
    close(fd);
    if (map == MAP_FAILED) {
        if (rank == 0)
            segment_unlink(name);
        free(c);
        return cx_fail(CX_ERUNTIME, "cannot map the shared-memory segment %s (%zu bytes): %s",
                       name, bytes, strerror(map_err));
    }
    c->hdr = map;
    c->sets = (float *)((char *)map + header_bytes());
    shm_header *h = c->hdr;
    if (rank == 0) {
        h->version = SHM_VERSION;
        h->world = (uint32_t)world;
        h->capacity = cap;
        atomic_store(&h->magic, SHM_MAGIC);
    } else {
        double start = now_s();
        while (atomic_load(&h->magic) != SHM_MAGIC) {
            if (timeout_s > 0 && now_s() - start > timeout_s) {
                shm_destroy(&c->base);
                return cx_fail(CX_ERUNTIME, "rank %d: the shared-memory segment %s was not "
                               "initialised by rank 0 within %.1f s", rank, name, timeout_s);
            }
            struct timespec ts = {0, 1000000L};
            nanosleep(&ts, NULL);
        }
        if (h->version != SHM_VERSION || h->world != (uint32_t)world || h->capacity != cap ||
            bytes != cx_comm_shm_segment_bytes(world, cap)) {
            cx_fail(CX_EINVAL, "rank %d: segment %s was made for %u ranks (version %u, %llu "
                    "floats per slot) but this rank expects %d ranks (version %u, %zu): the "
                    "ranks disagree on the world size", rank, name, h->world, h->version,
                    (unsigned long long)h->capacity, world, SHM_VERSION, cap);
            shm_destroy(&c->base); /* after the message: it reads the header */
            return CX_EINVAL;
        }
    }
    atomic_store(&h->pid[rank], (int32_t)getpid());
    atomic_fetch_add(&h->attached, 1);
    st = barrier(c);
    if (rank == 0)
        segment_unlink(name); /* every rank has it mapped (or the run failed): drop the name */
    if (st != CX_OK) {
        cx_fail_context(st, "while the ranks attached to %s: ", name);
        shm_destroy(&c->base);
        return st;
    }
    *out = &c->base;
    return CX_OK;
}
