/* The emulator's scheduler: the blocks of a launch one after another, the threads of a
 * block as fibers (on mmap'd stacks), __syncthreads, the warp rendezvous, the
 * thread order and the diagnosis of a block that can make no progress.
 *
 * A fiber runs threads until one waits; a thread that finishes without waiting leaves
 * its fiber to the next thread not yet started, so a kernel without barriers costs two
 * context switches per block, not per thread. A waiting thread keeps its fiber (its
 * stack) until it finishes. Released threads resume in the launch's thread order.
 * Under AddressSanitizer every switch is announced with the fiber-switch annotations.
 * On x86-64 a switch saves the callee-saved registers and swaps stack pointers (a few
 * nanoseconds); elsewhere it is swapcontext (which also makes a signal-mask system call). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <deque>
#include <string>
#include <vector>

#include "emu_internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define CX_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CX_EMU_ASAN 1
#endif
#endif
#ifdef CX_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

/* Bounds of the section that holds the static __shared__ variables (clang++ builds). */
extern "C" char __start_cx_emu_shared[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_cx_emu_shared[] __attribute__((weak, visibility("hidden")));

namespace cx_emu {
uint3 thread_idx, block_idx;
dim3 block_dim, grid_dim;

namespace {

enum thread_state { T_NEW, T_READY, T_RUNNING, T_BARRIER, T_WARP, T_DONE };

#if defined(__x86_64__) && !defined(CX_EMU_UCONTEXT) /* -DCX_EMU_UCONTEXT: the portable path */
#define CX_EMU_FAST_SWITCH 1
/* Saves rbp, rbx, r12-r15 on the current stack, stores its pointer in *save, continues on
 * the stack `to` (saved the same way, or prepared by reset_fiber). */
extern "C" void cx_emu_switch_stack(void **save, void *to);
__asm__(".text\n"
        ".globl cx_emu_switch_stack\n"
        ".hidden cx_emu_switch_stack\n"
        ".type cx_emu_switch_stack,@function\n"
        "cx_emu_switch_stack:\n"
        "    pushq %rbp\n    pushq %rbx\n    pushq %r12\n"
        "    pushq %r13\n    pushq %r14\n    pushq %r15\n"
        "    movq %rsp, (%rdi)\n"
        "    movq %rsi, %rsp\n"
        "    popq %r15\n    popq %r14\n    popq %r13\n"
        "    popq %r12\n    popq %rbx\n    popq %rbp\n"
        "    ret\n"
        ".size cx_emu_switch_stack, .-cx_emu_switch_stack\n");
#endif

struct fiber {
#ifdef CX_EMU_FAST_SWITCH
    void *sp; /* its saved stack pointer while it does not run */
#else
    ucontext_t context;
#endif
    char *stack; /* usable stack, above one guard page */
    size_t stack_bytes;
    void *fake_stack; /* AddressSanitizer's, saved across switches */
    int thread;       /* the thread it runs, -1 when free */
};

struct thread_rec {
    int state;
    uint3 index;
    fiber *on;
    const char *file; /* where it waits */
    int line;
    const char *op;
    int barrier_result;
    uint64_t got[CX_EMU_WARP]; /* a completed warp exchange's values */
};

/* Lanes of one warp that wait at the same warp operation with the same mask. */
struct warp_group {
    unsigned mask, arrived;
    const char *op, *file;
    int line;
    uint64_t values[CX_EMU_WARP];
};

struct block_state {
    const char *kernel;
    const kernel_call *call;
    int n_threads;
    std::vector<thread_rec> threads;
    std::vector<int> order; /* thread start and release order */
    int next_start;
    std::deque<int> ready;
    int done;
    int current = -1; /* the running thread, -1 between launches */
    int at_barrier, barrier_count, barrier_mixed;
    const char *barrier_file;
    int barrier_line;
    std::vector<std::vector<warp_group>> warps;
    int aborted;
};

block_state B;
/* Never destroyed: fibers may outlive static destructors (LeakSanitizer runs after them). */
std::vector<fiber *> &pool = *new std::vector<fiber *>;
std::vector<fiber *> &free_fibers = *new std::vector<fiber *>;
fiber *starting;
#ifdef CX_EMU_FAST_SWITCH
void *scheduler_sp;
#else
ucontext_t scheduler_context;
#endif
/* AddressSanitizer's fiber bookkeeping (unused in a build without it) */
[[maybe_unused]] void *scheduler_fake_stack;
[[maybe_unused]] const void *scheduler_stack_bottom;
[[maybe_unused]] size_t scheduler_stack_bytes;
unsigned char *dynamic_buffer;
long long ticks;
unsigned long long launch_count;

void set_current(int t) {
    B.current = t;
    thread_idx = B.threads[t].index;
}

/* ---- switching ---- */

void enter_fiber(fiber *f) { /* scheduler -> fiber */
#ifdef CX_EMU_ASAN
    __sanitizer_start_switch_fiber(&scheduler_fake_stack, f->stack, f->stack_bytes);
#endif
#ifdef CX_EMU_FAST_SWITCH
    cx_emu_switch_stack(&scheduler_sp, f->sp);
#else
    swapcontext(&scheduler_context, &f->context);
#endif
#ifdef CX_EMU_ASAN
    __sanitizer_finish_switch_fiber(scheduler_fake_stack, nullptr, nullptr);
#endif
}

void leave_fiber(fiber *f) { /* fiber -> scheduler; returns when resumed */
#ifdef CX_EMU_ASAN
    __sanitizer_start_switch_fiber(&f->fake_stack, scheduler_stack_bottom, scheduler_stack_bytes);
#endif
#ifdef CX_EMU_FAST_SWITCH
    cx_emu_switch_stack(&f->sp, scheduler_sp);
#else
    swapcontext(&f->context, &scheduler_context);
#endif
#ifdef CX_EMU_ASAN
    __sanitizer_finish_switch_fiber(f->fake_stack, &scheduler_stack_bottom, &scheduler_stack_bytes);
#endif
}

void run_thread(fiber *self) {
    int t = self->thread;
    set_current(t);
    B.threads[t].state = T_RUNNING;
    B.call->run(B.call);
    B.threads[t].state = T_DONE;
    B.done++;
}

void fiber_main(void) {
    fiber *self = starting;
#ifdef CX_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &scheduler_stack_bottom, &scheduler_stack_bytes);
#endif
    for (;;) {
        run_thread(self);
        if (!B.aborted && B.next_start < B.n_threads) { /* the next thread, same stack */
            int t = B.order[B.next_start++];
            self->thread = t;
            B.threads[t].on = self;
            continue;
        }
        self->thread = -1;
        free_fibers.push_back(self);
        leave_fiber(self);
    }
}

/* A fresh context for `f` (new, or abandoned by an aborted launch). */
void reset_fiber(fiber *f) {
#ifdef CX_EMU_ASAN
    ASAN_UNPOISON_MEMORY_REGION(f->stack, f->stack_bytes);
#endif
#ifdef CX_EMU_FAST_SWITCH
    /* The first switch pops six zeroed registers and "returns" into fiber_main with the
     * stack aligned as after a call (rsp + 8 a multiple of 16); rbp 0 ends backtraces. */
    uintptr_t top = ((uintptr_t)f->stack + f->stack_bytes) & ~(uintptr_t)15;
    void **frame = (void **)(top - 16 - 6 * sizeof(void *));
    for (int i = 0; i < 6; i++)
        frame[i] = nullptr;
    frame[6] = reinterpret_cast<void *>(&fiber_main);
    frame[7] = nullptr; /* fiber_main's return address: it never returns */
    f->sp = frame;
#else
    getcontext(&f->context);
    f->context.uc_stack.ss_sp = f->stack;
    f->context.uc_stack.ss_size = f->stack_bytes;
    f->context.uc_link = nullptr;
    makecontext(&f->context, fiber_main, 0);
#endif
    f->thread = -1;
    f->fake_stack = nullptr;
}

size_t stack_bytes_wanted(void) {
    const char *env = getenv("CX_EMU_STACK_KIB");
    long kib = env ? atol(env) : 0;
    return (size_t)(kib >= 64 ? kib : 256) << 10;
}

fiber *new_fiber(void) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE), bytes = stack_bytes_wanted();
    void *base = mmap(nullptr, bytes + page, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED)
        return nullptr;
    mprotect(base, page, PROT_NONE); /* a stack overflow faults instead of corrupting */
    fiber *f = new fiber();
    f->stack = (char *)base + page;
    f->stack_bytes = bytes;
    reset_fiber(f);
    pool.push_back(f);
    free_fibers.push_back(f);
    return f;
}

/* Runs thread t (new or released) until it finishes or waits. */
int resume(int t) {
    thread_rec &rec = B.threads[t];
    fiber *f = rec.on;
    if (!f) {
        if (free_fibers.empty() && !new_fiber())
            return 0;
        f = free_fibers.back();
        free_fibers.pop_back();
        f->thread = t;
        rec.on = f;
    }
    set_current(t);
    rec.state = T_RUNNING;
    starting = f;
    enter_fiber(f);
    return 1;
}

/* The running thread waits (its state already set); returns when released. */
void wait_here(void) {
    int t = B.current;
    leave_fiber(B.threads[t].on);
    set_current(t);
}

/* ---- order ---- */

int parse_order(const char *text, int *mode, unsigned long long *seed) {
    if (!text || !*text || !strcmp(text, "forward")) {
        *mode = 0;
        return 1;
    }
    if (!strcmp(text, "reverse")) {
        *mode = 1;
        return 1;
    }
    if (!strncmp(text, "random:", 7) && text[7]) {
        char *end = nullptr;
        *seed = strtoull(text + 7, &end, 10);
        *mode = 2;
        return *end == '\0';
    }
    return 0;
}

unsigned long long splitmix(unsigned long long *state) {
    unsigned long long z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void make_order(int mode, unsigned long long seed, unsigned long long block) {
    int n = B.n_threads;
    for (int i = 0; i < n; i++)
        B.order[i] = mode == 1 ? n - 1 - i : i;
    if (mode == 2) {
        unsigned long long state = seed ^ (launch_count * 0xd1b54a32d192ed03ull) ^ (block << 32);
        for (int i = n - 1; i > 0; i--) {
            int j = (int)(splitmix(&state) % (unsigned long long)(i + 1));
            int keep = B.order[i];
            B.order[i] = B.order[j];
            B.order[j] = keep;
        }
    }
}

/* ---- diagnosis of a block that cannot go on ---- */

std::string where(const thread_rec &rec) {
    char text[64];
    snprintf(text, sizeof text, "(%u,%u,%u)", rec.index.x, rec.index.y, rec.index.z);
    return text;
}

std::string state_text(const thread_rec &rec) {
    char text[512];
    if (rec.state == T_DONE)
        return "has exited";
    if (rec.state == T_BARRIER)
        snprintf(text, sizeof text, "waits at __syncthreads (%s:%d)", rec.file, rec.line);
    else if (rec.state == T_WARP)
        snprintf(text, sizeof text, "waits at %s (%s:%d)", rec.op, rec.file, rec.line);
    else
        snprintf(text, sizeof text, "has not run");
    return text;
}

void diagnose_stall(void) {
    char head[256];
    snprintf(head, sizeof head, "kernel '%s', block (%u,%u,%u) of grid (%u,%u,%u), %d threads",
             B.kernel, block_idx.x, block_idx.y, block_idx.z, grid_dim.x, grid_dim.y, grid_dim.z,
             B.n_threads);
    for (size_t w = 0; w < B.warps.size(); w++) {
        for (const warp_group &g : B.warps[w]) {
            unsigned missing = g.mask & ~g.arrived;
            int lane = __builtin_ctz(missing);
            const thread_rec &other = B.threads[w * CX_EMU_WARP + lane];
            fail(cudaErrorLaunchFailure,
                 "warp divergence in %s: in warp %zu, lanes 0x%08x wait at %s (%s:%d) with mask "
                 "0x%08x, but lane %d (thread %s) %s",
                 head, w, g.arrived, g.op, g.file, g.line, g.mask, lane, where(other).c_str(),
                 state_text(other).c_str());
            return;
        }
    }
    /* Only barrier waiters and exited threads are left: group them by what they do. */
    std::vector<std::string> kinds;
    std::vector<int> counts, firsts;
    for (int t = 0; t < B.n_threads; t++) {
        std::string kind = state_text(B.threads[t]);
        size_t k = 0;
        while (k < kinds.size() && kinds[k] != kind)
            k++;
        if (k == kinds.size()) {
            kinds.push_back(kind);
            counts.push_back(0);
            firsts.push_back(t);
        }
        counts[k]++;
    }
    std::string detail;
    for (size_t k = 0; k < kinds.size(); k++) {
        char part[640];
        snprintf(part, sizeof part, "%s%d thread(s) %s (first %s)", k ? "; " : "", counts[k],
                 kinds[k].c_str(), where(B.threads[firsts[k]]).c_str());
        detail += part;
    }
    fail(cudaErrorLaunchFailure,
         "barrier divergence in %s: __syncthreads must be reached by every thread of the block "
         "at the same call: %s",
         head, detail.c_str());
}

/* ---- one block ---- */

void fill_shared(size_t dynamic_bytes) {
    if (dynamic_bytes)
        memset(dynamic_buffer, 0xFF, dynamic_bytes);
    char *begin = __start_cx_emu_shared, *end = __stop_cx_emu_shared;
    if (begin && end > begin)
        memset(begin, 0xFF, (size_t)(end - begin));
}

void abandon_fibers(void) {
    free_fibers.clear();
    for (fiber *f : pool) {
        reset_fiber(f);
        free_fibers.push_back(f);
    }
}

int run_block(void) {
    int n = B.n_threads;
    for (int t = 0; t < n; t++) {
        thread_rec &rec = B.threads[t];
        rec.state = T_NEW;
        rec.on = nullptr;
        unsigned x = block_dim.x, y = block_dim.y;
        rec.index = uint3{(unsigned)t % x, (unsigned)t / x % y, (unsigned)t / (x * y)};
    }
    for (auto &groups : B.warps)
        groups.clear();
    B.next_start = 0;
    B.ready.clear();
    B.done = 0;
    B.at_barrier = 0;
    while (!B.aborted) {
        int t;
        if (!B.ready.empty()) {
            t = B.ready.front();
            B.ready.pop_front();
        } else if (B.next_start < n) {
            t = B.order[B.next_start++];
        } else if (B.done == n) {
            return 1;
        } else {
            diagnose_stall();
            B.aborted = 1;
            break;
        }
        if (!resume(t)) {
            fail(cudaErrorLaunchOutOfResources, "kernel '%s': no memory for the stack of thread %d",
                 B.kernel, t);
            B.aborted = 1;
        }
    }
    abandon_fibers();
    return 0;
}

} // namespace

/* ---- called from kernel code ---- */

int syncthreads(int predicate, const char *file, int line) {
    if (B.current < 0)
        kernel_error(file, line, "__syncthreads called outside a kernel");
    thread_rec &me = B.threads[B.current];
    if (B.at_barrier == 0) {
        B.barrier_file = file;
        B.barrier_line = line;
        B.barrier_mixed = 0;
        B.barrier_count = 0;
    } else if (line != B.barrier_line || strcmp(file, B.barrier_file)) {
        B.barrier_mixed = 1;
    }
    me.state = T_BARRIER;
    me.file = file;
    me.line = line;
    B.at_barrier++;
    B.barrier_count += predicate;
    if (B.at_barrier == B.n_threads && !B.barrier_mixed) {
        for (int t : B.order) {
            B.threads[t].state = T_READY;
            B.threads[t].barrier_result = B.barrier_count;
            B.ready.push_back(t);
        }
        B.at_barrier = 0;
    }
    wait_here();
    return me.barrier_result;
}

void warp_exchange(unsigned mask, uint64_t value, uint64_t all[CX_EMU_WARP], const char *op,
                   const char *file, int line) {
    if (B.current < 0)
        kernel_error(file, line, "%s called outside a kernel", op);
    int t = B.current, warp = t / CX_EMU_WARP, lane = t % CX_EMU_WARP;
    int lanes = B.n_threads - warp * CX_EMU_WARP;
    unsigned existing = lanes >= CX_EMU_WARP ? 0xffffffffu : (1u << lanes) - 1u;
    if (!(mask >> lane & 1u))
        kernel_error(file, line, "%s: the calling lane %d is not in its mask 0x%08x", op, lane, mask);
    if (mask & ~existing)
        kernel_error(file, line, "%s: mask 0x%08x names lanes that do not exist (warp %d has %d lanes)",
                     op, mask, warp, lanes < CX_EMU_WARP ? lanes : CX_EMU_WARP);
    std::vector<warp_group> &groups = B.warps[warp];
    warp_group *group = nullptr;
    for (warp_group &g : groups) {
        if (!(g.mask & mask))
            continue;
        if (g.mask != mask || strcmp(g.op, op))
            kernel_error(file, line,
                         "warp divergence in kernel '%s': lane %d calls %s with mask 0x%08x while "
                         "lanes 0x%08x wait at %s (%s:%d) with mask 0x%08x",
                         B.kernel, lane, op, mask, g.arrived, g.op, g.file, g.line, g.mask);
        group = &g;
    }
    if (!group) {
        groups.push_back(warp_group{mask, 0, op, file, line, {}});
        group = &groups.back();
    }
    group->values[lane] = value;
    group->arrived |= 1u << lane;
    thread_rec &me = B.threads[t];
    me.state = T_WARP;
    me.op = op;
    me.file = file;
    me.line = line;
    if (group->arrived == mask) {
        for (int u : B.order) {
            if (u / CX_EMU_WARP != warp || !(mask >> (u % CX_EMU_WARP) & 1u))
                continue;
            for (int k = 0; k < CX_EMU_WARP; k++)
                B.threads[u].got[k] = mask >> k & 1u ? group->values[k] : 0;
            B.threads[u].state = T_READY;
            B.ready.push_back(u);
        }
        groups.erase(groups.begin() + (group - groups.data()));
    }
    wait_here();
    memcpy(all, me.got, sizeof me.got);
}

void kernel_error(const char *file, int line, const char *fmt, ...) {
    char text[1024];
    va_list args;
    va_start(args, fmt);
    vsnprintf(text, sizeof text, fmt, args);
    va_end(args);
    if (B.current < 0) { /* device code called from host code: nvcc would not compile it */
        fail(cudaErrorLaunchFailure, "%s (%s:%d)", text, file, line);
        __builtin_trap();
    }
    const thread_rec &me = B.threads[B.current];
    fail(cudaErrorLaunchFailure, "%s (%s:%d; kernel '%s', block (%u,%u,%u), thread (%u,%u,%u))",
         text, file, line, B.kernel, block_idx.x, block_idx.y, block_idx.z, me.index.x, me.index.y,
         me.index.z);
    B.aborted = 1;
    leave_fiber(me.on); /* never resumed: the scheduler abandons this fiber */
    __builtin_unreachable();
}

unsigned lane_id(void) { return B.current < 0 ? 0u : (unsigned)B.current % CX_EMU_WARP; }

unsigned live_lanes(void) {
    if (B.current < 0)
        return 0;
    int warp = B.current / CX_EMU_WARP;
    unsigned live = 0;
    for (int lane = 0; lane < CX_EMU_WARP; lane++) {
        int t = warp * CX_EMU_WARP + lane;
        if (t < B.n_threads && B.threads[t].state != T_DONE)
            live |= 1u << lane;
    }
    return live;
}

void *dynamic_shared(void) { return dynamic_buffer; }

long long clock_ticks(void) { return ++ticks; }

cudaError_t run_grid(const char *name, dim3 grid, dim3 block, size_t shared_bytes,
                     const kernel_call *call) {
    int mode = 0;
    unsigned long long seed = 0;
    const char *order_text = getenv("CX_EMU_ORDER");
    if (!parse_order(order_text, &mode, &seed))
        return fail(cudaErrorInvalidValue,
                    "CX_EMU_ORDER='%s': expected forward, reverse or random:SEED (SEED a decimal "
                    "integer)",
                    order_text);
    launch_count++;
    B.kernel = name;
    B.call = call;
    B.n_threads = (int)(block.x * block.y * block.z);
    B.threads.assign((size_t)B.n_threads, thread_rec());
    B.order.assign((size_t)B.n_threads, 0);
    B.warps.assign((size_t)(B.n_threads + CX_EMU_WARP - 1) / CX_EMU_WARP, {});
    B.aborted = 0;
    /* exactly the bytes asked for: AddressSanitizer reports an access past them */
    dynamic_buffer = (unsigned char *)malloc(shared_bytes ? shared_bytes : 1);
    if (!dynamic_buffer)
        return fail(cudaErrorMemoryAllocation, "kernel '%s': no host memory for %zu bytes of "
                    "dynamic shared memory", name, shared_bytes);
    block_dim = block;
    grid_dim = grid;
    int ok = 1;
    unsigned long long linear = 0;
    for (unsigned z = 0; ok && z < grid.z; z++)
        for (unsigned y = 0; ok && y < grid.y; y++)
            for (unsigned x = 0; ok && x < grid.x; x++, linear++) {
                block_idx = uint3{x, y, z};
                make_order(mode, seed, linear);
                fill_shared(shared_bytes);
                ok = run_block();
            }
    free(dynamic_buffer);
    dynamic_buffer = nullptr;
    B.current = -1;
    return ok ? cudaSuccess : cudaErrorLaunchFailure;
}

} // namespace cx_emu
