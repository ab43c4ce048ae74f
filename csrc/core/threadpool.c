/* A small persistent pthread pool (see cx.h for the determinism contract).
 *
 * One job runs at a time (callers from different threads queue on submit_lock).
 * A job is split into chunks; the pool threads and the caller claim chunks from an
 * atomic counter until none are left, and the caller returns once every claimed chunk
 * is done. It does not wait for sleeping workers to wake: a training step posts about a
 * thousand jobs, most of them microseconds long, and a futex wake-up plus reschedule of
 * each worker (tens of microseconds on a busy VM) would otherwise sit on the critical
 * path of every one. A worker that wakes late finds the chunks claimed, or a newer job.
 * The claim counter carries the job's generation in its upper 32 bits, and a chunk is
 * claimed by compare-and-swap, so a late worker can never claim a chunk of a job it did
 * not read. After fork() the child has no pool threads; the atfork handler forgets the
 * old pool so the child builds a fresh one on first use. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cx.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define CX_MAX_THREADS 256

typedef struct {
    cx_range_fn fn;
    void *ctx;
    int64_t n;
    int64_t chunk;
    int64_t n_chunks;
} pool_job;

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t work_ready;
    pthread_cond_t work_done;
    pthread_t threads[CX_MAX_THREADS];
    int n_workers;       /* pool threads, caller not counted */
    uint64_t generation; /* bumped for each job (under lock); workers wait for a change */
    int stopping;
    pool_job job;        /* the current job (under lock) */
    atomic_uint_fast64_t claim; /* (generation & 0xffffffff) << 32 | next chunk index */
    atomic_int_fast64_t chunks_done; /* chunks of the current job finished */
    int caller_sleeping; /* the caller waits on work_done (under lock) */
} thread_pool;

static pthread_mutex_t submit_lock = PTHREAD_MUTEX_INITIALIZER;
static thread_pool *pool;        /* NULL until first parallel use */
static int configured_threads;   /* 0 = not decided yet */
static _Thread_local int in_pool_task;
static _Thread_local int thread_index;

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int default_thread_count(void) {
    const char *env = getenv("CODEXT_NUM_THREADS");
    if (env && *env) {
        int n = atoi(env);
        if (n >= 1)
            return n > CX_MAX_THREADS ? CX_MAX_THREADS : n;
    }
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n >= 1)
            return n > CX_MAX_THREADS ? CX_MAX_THREADS : n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n >= 1 ? (int)(n > CX_MAX_THREADS ? CX_MAX_THREADS : n) : 1;
}

/* Claims and runs chunks of `job` (generation `gen`) until none is left or the counter
 * belongs to another job. The thread that finishes the last chunk wakes a sleeping
 * caller. */
static void run_chunks(thread_pool *p, pool_job job, uint64_t gen) {
    uint64_t tag = (gen & 0xffffffffu) << 32;
    for (;;) {
        uint64_t c = atomic_load(&p->claim);
        if ((c & ~(uint64_t)0xffffffffu) != tag || (int64_t)(c & 0xffffffffu) >= job.n_chunks)
            return;
        if (!atomic_compare_exchange_weak(&p->claim, &c, c + 1))
            continue;
        int64_t begin = (int64_t)(c & 0xffffffffu) * job.chunk;
        int64_t end = begin + job.chunk < job.n ? begin + job.chunk : job.n;
        job.fn(job.ctx, begin, end);
        if (atomic_fetch_add(&p->chunks_done, 1) + 1 == job.n_chunks) {
            pthread_mutex_lock(&p->lock);
            if (p->caller_sleeping)
                pthread_cond_signal(&p->work_done);
            pthread_mutex_unlock(&p->lock);
        }
    }
}

static void *worker_main(void *arg) {
    thread_pool *p = pool;
    thread_index = (int)(intptr_t)arg;
    in_pool_task = 1;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->generation == seen && !p->stopping)
            pthread_cond_wait(&p->work_ready, &p->lock);
        if (p->stopping)
            break;
        seen = p->generation;
        pool_job job = p->job;
        pthread_mutex_unlock(&p->lock);
        run_chunks(p, job, seen);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    cx_scratch_release();
    return NULL;
}

static void pool_destroy(thread_pool *p) {
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->work_ready);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n_workers; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->work_ready);
    pthread_cond_destroy(&p->work_done);
    free(p);
}

static void forget_pool_in_child(void) {
    /* The child has only the forking thread: the old pool's threads are gone. Leak
     * the struct (its mutexes may be in any state) and start over on first use. */
    pool = NULL;
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    submit_lock = fresh;
    in_pool_task = 0;
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void install_atfork(void) { pthread_atfork(NULL, NULL, forget_pool_in_child); }

/* Called with submit_lock held. Returns NULL when only one thread is wanted. */
static thread_pool *ensure_pool(void) {
    pthread_once(&atfork_once, install_atfork);
    int wanted = cx_get_num_threads();
    if (wanted <= 1)
        return NULL;
    if (pool && pool->n_workers == wanted - 1)
        return pool;
    pool_destroy(pool);
    pool = NULL;
    thread_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work_ready, NULL);
    pthread_cond_init(&p->work_done, NULL);
    pool = p;
    int want = wanted - 1;
    for (int i = 0; i < want; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, (void *)(intptr_t)(i + 1)) != 0)
            break;
        p->n_workers++;
    }
    if (p->n_workers == 0) {
        pool_destroy(p);
        pool = NULL;
    }
    return pool;
}

void cx_parallel_for(int64_t n, int64_t grain, cx_range_fn fn, void *ctx) {
    if (n <= 0)
        return;
    if (grain < 1)
        grain = 1;
    if (in_pool_task || n <= grain) {
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&submit_lock);
    thread_pool *p = ensure_pool();
    if (!p) {
        pthread_mutex_unlock(&submit_lock);
        fn(ctx, 0, n);
        return;
    }
    int n_threads = p->n_workers + 1;
    int64_t max_chunks = (int64_t)n_threads * 4;
    int64_t n_chunks = (n + grain - 1) / grain;
    if (n_chunks > max_chunks)
        n_chunks = max_chunks;
    int64_t chunk = (n + n_chunks - 1) / n_chunks;
    n_chunks = (n + chunk - 1) / chunk;

    pool_job job = {fn, ctx, n, chunk, n_chunks};
    pthread_mutex_lock(&p->lock);
    p->job = job;
    uint64_t gen = ++p->generation;
    atomic_store(&p->chunks_done, 0);
    atomic_store(&p->claim, (gen & 0xffffffffu) << 32);
    pthread_cond_broadcast(&p->work_ready);
    pthread_mutex_unlock(&p->lock);

    in_pool_task = 1;
    run_chunks(p, job, gen);
    in_pool_task = 0;

    /* the chunks other threads claimed: usually running already, so a short spin */
    for (int i = 0; i < 1024 && atomic_load(&p->chunks_done) < n_chunks; i++)
        cpu_relax();
    if (atomic_load(&p->chunks_done) < n_chunks) {
        pthread_mutex_lock(&p->lock);
        p->caller_sleeping = 1;
        while (atomic_load(&p->chunks_done) < n_chunks)
            pthread_cond_wait(&p->work_done, &p->lock);
        p->caller_sleeping = 0;
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&submit_lock);
}

int cx_get_num_threads(void) {
    /* No lock: this is called from inside pool tasks (sizing work), where the running
     * job holds submit_lock. A racing first call computes the same default. */
    int n = __atomic_load_n(&configured_threads, __ATOMIC_ACQUIRE);
    if (n == 0) {
        n = default_thread_count();
        int expected = 0;
        if (!__atomic_compare_exchange_n(&configured_threads, &expected, n, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            n = expected;
    }
    return n;
}

cx_status cx_set_num_threads(int n_threads) {
    if (n_threads < 1 || n_threads > CX_MAX_THREADS)
        return cx_fail(CX_EINVAL, "num_threads must be in 1..%d, got %d", CX_MAX_THREADS, n_threads);
    pthread_mutex_lock(&submit_lock);
    __atomic_store_n(&configured_threads, n_threads, __ATOMIC_RELEASE);
    if (pool && pool->n_workers != n_threads - 1) {
        pool_destroy(pool);
        pool = NULL;
    }
    pthread_mutex_unlock(&submit_lock);
    return CX_OK;
}

int cx_thread_index(void) { return thread_index; }
