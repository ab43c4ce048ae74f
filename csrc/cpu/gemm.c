/* Blocked, packed, multi-threaded SGEMM (see gemm.h for the contract).
 *
 * Structure (BLIS-like): K is cut into blocks of at most KC_MAX columns (a function of K
 * only). For each output tile (an MC x NC block of C, the unit of threading) and each K
 * block, the A block is packed into MR-row panels; B rows that are contiguous in memory
 * are read in place by the micro-kernel (through a per-k offset table, which is also how
 * convolutions address a padded image), other B operands are packed into NR-column panels
 * (or, when op(B) is small and shared by many tiles, packed once up front). The
 * micro-kernel computes each MR x NR sub-tile as one FMA chain over the K block and
 * applies the epilogue C = alpha*acc + beta*C + bias.
 *
 * Micro-kernels: AVX-512 (12x32, 24x16, 8x48), AVX2+FMA (6x16), portable C (4x8). The
 * AVX-512 and AVX2 kernels perform the same per-element FMA chain and epilogue, so they
 * produce identical bits; which one runs is a speed decision per problem shape (least
 * padding). Tile sizes follow a small cost model (choose_tiles) and may depend on the
 * thread count, since they never change any element's arithmetic. */
#include "gemm_kernels.h"
#include "cpu_error.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

#define NC_L2_FLOATS (128 * 1024)          /* B block (kc x NC) budget: half of L2 */
#define MC_L3_FLOATS (1024 * 1024)         /* A block (MC x kc) budget: a slice of L3 */
#define CACHED_OPERAND_FLOATS (4 << 20)    /* operands larger than this come from DRAM */
#define TASK_OVERHEAD 50000                /* per tile, in multiply-adds (tiling model) */
#define SHARED_B_MAX_FLOATS ((size_t)4 << 20) /* pre-pack op(B) when at most 16 MB */

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* Threads the tiling plans for: the CPUs this process may use. Deliberately not
 * cx_get_num_threads(), which takes the pool's submit lock and so would deadlock when a
 * product runs inside a cx_parallel_for task; tiles only affect speed, never results. */
static int cpu_count(void) {
    static int cached;
    if (!cached) {
        cpu_set_t set;
        int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
        cached = n > 0 ? n : 1;
    }
    return cached;
}

/* ---- driver ------------------------------------------------------------------------------ */

typedef struct {
    const cx_gemm_problem *p;
    const micro_kernel *uk;
    int kcb, n_kblocks;
    int mc, nc, m_blocks, n_blocks;
    int64_t n_pad;         /* N rounded up to NR */
    const float *shared_b; /* op(B) packed once, or NULL */
    int direct_a, direct_b; /* read full panels in place (x-contiguous matrices) */
    int failed;            /* a scratch allocation failed */
} gemm_plan;

static void k_block(const gemm_plan *g, int pb, int *k0, int *kc) {
    *k0 = pb * g->kcb;
    *kc = g->p->K - *k0 < g->kcb ? g->p->K - *k0 : g->kcb;
}

/* One output tile (rows [i0, i0+mc), columns [j0, j0+nc)) for items [item0, item1).
 * Loop order (as BLIS): the narrower micro-panel (A's MR x kc, or B's kc x NR) stays in
 * L1 while the other operand's block (sized for L2) streams past it. */
/* Where the micro-kernel finds one operand of a tile for the current K block: either a
 * packed block (panel p at packed + p*kc*width, rows k*width apart) or, for a matrix
 * contiguous along x, the matrix itself (panel p at in_place + p*width, row k at
 * offset[k]); a ragged last panel is always packed. */
typedef struct {
    const cx_gemm_operand *op;
    const cx_gemm_matrix *in_place_matrix; /* NULL: packed */
    float *packed;
    const float *in_place;
    int64_t in_place_off[KC_MAX];
    int width, n_full; /* panel width; extent of the full panels */
} tile_operand;

static void operand_load(tile_operand *t, int item, int k0, int kc, int x0, int nx) {
    const cx_gemm_matrix *m = t->in_place_matrix;
    if (!m) {
        t->op->pack(t->op->ctx, item, k0, kc, x0, nx, t->width, t->packed);
        t->n_full = 0;
        return;
    }
    t->in_place = m->data + x0;
    for (int k = 0; k < kc; k++)
        t->in_place_off[k] = (int64_t)item * m->item_stride + matrix_k_offset(m, k0 + k);
    t->n_full = nx / t->width * t->width;
    if (t->n_full < nx) /* the ragged panel goes to the start of the packed buffer */
        t->op->pack(t->op->ctx, item, k0, kc, x0 + t->n_full, nx - t->n_full, t->width,
                    t->packed);
}

static const float *operand_panel(const tile_operand *t, int x, int kc, const int64_t **off) {
    if (x < t->n_full) {
        *off = t->in_place_off;
        return t->in_place + x;
    }
    *off = NULL; /* packed: the kernel steps k*width */
    return t->packed + (int64_t)((x - t->n_full) / t->width) * kc * t->width;
}

static int in_place_ok(const cx_gemm_operand *op) {
    return op->pack == cx_gemm_pack_matrix && matrix_x_contiguous((const cx_gemm_matrix *)op->ctx);
}

static void gemm_tile(gemm_plan *g, int item0, int item1, int i0, int mc, int j0, int nc) {
    const cx_gemm_problem *p = g->p;
    const int MR = g->uk->mr, NR = g->uk->nr;
    tile_operand ta, tb; /* ~10 KB of offset tables on the stack */
    ta.op = &p->A;
    tb.op = &p->B;
    ta.width = MR;
    tb.width = NR;
    ta.in_place_matrix = g->direct_a ? p->A.ctx : NULL;
    tb.in_place_matrix = g->direct_b ? p->B.ctx : NULL;
    ta.packed = cx_scratch(CX_GEMM_SLOT_A, (size_t)(g->direct_a ? MR : round_up(mc, MR)) * g->kcb + 64);
    tb.packed = g->shared_b ? NULL
                            : cx_scratch(CX_GEMM_SLOT_B,
                                         (size_t)(g->direct_b ? NR : round_up(nc, NR)) * g->kcb + 64);
    if (!ta.packed || (!g->shared_b && !tb.packed)) {
        __atomic_store_n(&g->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    tb.n_full = 0;
    for (int item = item0; item < item1; item++) {
        float *c_item = p->C + (p->reduce_items ? 0 : (int64_t)item * p->c_item_stride);
        for (int pb = 0; pb < g->n_kblocks; pb++) {
            int k0, kc;
            k_block(g, pb, &k0, &kc);
            operand_load(&ta, item, k0, kc, i0, mc);
            if (g->shared_b)
                tb.packed = (float *)g->shared_b + (int64_t)k0 * g->n_pad + (int64_t)j0 * kc;
            else
                operand_load(&tb, item, k0, kc, j0, nc);
            int first = pb == 0 && (!p->reduce_items || item == item0);
            gemm_epilogue ep = {p->alpha, first ? p->beta : 1.0f, !first || p->beta != 0.0f,
                                NULL, NULL};
            /* The narrower micro-panel stays in L1 while the other streams past it. */
            int a_outer = MR <= NR;
            int n_ir = (mc + MR - 1) / MR, n_jr = (nc + NR - 1) / NR;
            for (int outer = 0; outer < (a_outer ? n_ir : n_jr); outer++)
                for (int inner = 0; inner < (a_outer ? n_jr : n_ir); inner++) {
                    int ir = (a_outer ? outer : inner) * MR, jr = (a_outer ? inner : outer) * NR;
                    int mr = mc - ir < MR ? mc - ir : MR;
                    int nr = nc - jr < NR ? nc - jr : NR;
                    ep.bias_m = first && p->bias_m ? p->bias_m + i0 + ir : NULL;
                    ep.bias_n = first && p->bias_n ? p->bias_n + j0 + jr : NULL;
                    const int64_t *a_off, *b_off;
                    const float *a_panel = operand_panel(&ta, ir, kc, &a_off);
                    const float *b_panel = operand_panel(&tb, jr, kc, &b_off);
                    g->uk->fn(kc, a_panel, a_off, b_panel, b_off,
                              c_item + (int64_t)(i0 + ir) * p->ldc + j0 + jr, p->ldc, mr, nr, &ep);
                }
        }
    }
}

static void gemm_tiles_task(void *ctx, int64_t begin, int64_t end) {
    gemm_plan *g = ctx;
    const cx_gemm_problem *p = g->p;
    int64_t per_item = (int64_t)g->m_blocks * g->n_blocks;
    for (int64_t t = begin; t < end; t++) {
        int item = (int)(t / per_item);
        int rest = (int)(t % per_item);
        int mb = rest / g->n_blocks, nb = rest % g->n_blocks;
        int i0 = mb * g->mc, j0 = nb * g->nc;
        int mc = p->M - i0 < g->mc ? p->M - i0 : g->mc;
        int nc = p->N - j0 < g->nc ? p->N - j0 : g->nc;
        if (p->reduce_items)
            gemm_tile(g, 0, p->items, i0, mc, j0, nc);
        else
            gemm_tile(g, item, item + 1, i0, mc, j0, nc);
    }
}

/* Pre-packing of op(B): task = (K block, group of 8 NR-panels). */
#define PREPACK_PANELS 8
static void prepack_b_task(void *ctx, int64_t begin, int64_t end) {
    gemm_plan *g = ctx;
    const int NR = g->uk->nr;
    int64_t groups = (g->n_pad / NR + PREPACK_PANELS - 1) / PREPACK_PANELS;
    float *packed = (float *)g->shared_b;
    for (int64_t t = begin; t < end; t++) {
        int pb = (int)(t / groups), grp = (int)(t % groups);
        int k0, kc;
        k_block(g, pb, &k0, &kc);
        int j0 = grp * PREPACK_PANELS * NR;
        int nc = g->p->N - j0 < PREPACK_PANELS * NR ? g->p->N - j0 : PREPACK_PANELS * NR;
        g->p->B.pack(g->p->B.ctx, 0, k0, kc, j0, nc, NR,
                     packed + (int64_t)k0 * g->n_pad + (int64_t)j0 * kc);
    }
}

/* K == 0: C = beta*C + bias, with the same operation order as the kernels' epilogue. */
static void gemm_no_k(const cx_gemm_problem *p) {
    int n_c = p->reduce_items ? 1 : p->items;
    for (int t = 0; t < n_c; t++) {
        float *c = p->C + (int64_t)t * p->c_item_stride;
        for (int i = 0; i < p->M; i++)
            for (int j = 0; j < p->N; j++) {
                float v = p->alpha * 0.0f;
                if (p->beta != 0.0f)
                    v = v + p->beta * c[(int64_t)i * p->ldc + j];
                if (p->bias_m)
                    v = v + p->bias_m[i];
                if (p->bias_n)
                    v = v + p->bias_n[j];
                c[(int64_t)i * p->ldc + j] = v;
            }
    }
}

/* Chooses the output tiling (mc x nc blocks, one task each). Tiles never change results,
 * so this may depend on the thread count. The cost estimate, in multiply-adds of one
 * thread: the makespan of the padded work, plus half a task for dynamic-scheduling
 * imbalance, plus the operand traffic (A is read once per column block, B once per row
 * block unless pre-packed), weighted by how far away the operands live. */
static void choose_tiles(gemm_plan *g, int threads) {
    const cx_gemm_problem *p = g->p;
    const int MR = g->uk->mr, NR = g->uk->nr;
    int64_t k_total = (int64_t)p->K * (p->reduce_items ? p->items : 1);
    int items_eff = p->reduce_items ? 1 : p->items;
    int64_t nc_cap = NC_L2_FLOATS / g->kcb / NR * NR;
    if (nc_cap < NR)
        nc_cap = NR;
    int64_t mc_cap = MC_L3_FLOATS / g->kcb / MR * MR;
    if (mc_cap < MR)
        mc_cap = MR;
    int64_t m_panels = (p->M + MR - 1) / MR, n_panels = (p->N + NR - 1) / NR;
    int64_t operand_floats = ((int64_t)p->M + p->N) * k_total;
    double traffic_weight = operand_floats > CACHED_OPERAND_FLOATS ? 12.0 : 3.0;
    int b_shared = g->shared_b != NULL;
    double best = -1;
    int64_t mb_min = (p->M + mc_cap - 1) / mc_cap, nb_min = (p->N + nc_cap - 1) / nc_cap;
    for (int64_t mb = mb_min; mb <= m_panels; mb = mb < 8 ? mb + 1 : mb + (mb + 7) / 8) {
        int64_t mc = round_up((p->M + mb - 1) / mb, MR);
        int64_t mb_real = (p->M + mc - 1) / mc;
        for (int64_t nb = nb_min; nb <= n_panels; nb = nb < 8 ? nb + 1 : nb + (nb + 7) / 8) {
            int64_t nc = round_up((p->N + nb - 1) / nb, NR);
            int64_t nb_real = (p->N + nc - 1) / nc;
            int64_t tasks = items_eff * mb_real * nb_real;
            double task_work = (double)mc * nc * k_total;
            double makespan = (double)((tasks + threads - 1) / threads) * task_work;
            double traffic = (double)items_eff * k_total *
                             ((double)nb_real * p->M + (b_shared ? 1.0 : (double)mb_real) * p->N);
            double cost = makespan + 0.5 * task_work + traffic_weight * traffic +
                          (double)TASK_OVERHEAD * tasks / threads;
            if (best < 0 || cost < best) {
                best = cost;
                g->mc = (int)mc;
                g->nc = (int)nc;
                g->m_blocks = (int)mb_real;
                g->n_blocks = (int)nb_real;
            }
            if (tasks >= 64L * threads)
                break;
        }
    }
}

void cx_gemm_run(const cx_gemm_problem *p) {
    if (p->M <= 0 || p->N <= 0 || p->items <= 0)
        return;
    if (p->K <= 0) {
        gemm_no_k(p);
        return;
    }
    gemm_plan g = {0};
    g.p = p;
    g.uk = cx_gemm_choose_kernel(p->M, p->N);
    const int NR = g.uk->nr;
    /* K blocks depend on K only (this fixes each element's summation order). */
    g.n_kblocks = (p->K + KC_MAX - 1) / KC_MAX;
    g.kcb = (p->K + g.n_kblocks - 1) / g.n_kblocks;
    g.n_pad = round_up(p->N, NR);
    int threads = cpu_count();

    /* Pack op(B) once when it is shared by several row blocks and small enough. */
    size_t b_floats = (size_t)g.n_pad * (size_t)p->K;
    int64_t mc_cap = MC_L3_FLOATS / g.kcb;
    float *packed = NULL;
    if (p->items == 1 && (p->M > mc_cap || p->M > 4 * g.uk->mr * threads) &&
        b_floats <= SHARED_B_MAX_FLOATS)
        packed = cx_scratch(CX_GEMM_SLOT_B, b_floats + 64);
    g.shared_b = packed;
    choose_tiles(&g, threads);
    if (packed && g.m_blocks == 1)
        g.shared_b = NULL; /* one row block: pack B inside the tiles instead */
    /* operands whose rows are contiguous in memory are read in place */
    g.direct_b = !g.shared_b && in_place_ok(&p->B);
    /* A in place when its micro-panels stream anyway (B kept in L1), or when K is long
     * enough that packing A would mostly wait on memory (weight gradients) */
    g.direct_a = in_place_ok(&p->A) && (g.uk->mr > g.uk->nr || g.n_kblocks >= 8);
    if (g.shared_b) {
        int64_t groups = (g.n_pad / NR + PREPACK_PANELS - 1) / PREPACK_PANELS;
        cx_parallel_for((int64_t)g.n_kblocks * groups, 1, prepack_b_task, &g);
    }
    int items_eff = p->reduce_items ? 1 : p->items;
    int64_t n_tasks = (int64_t)items_eff * g.m_blocks * g.n_blocks;
    cx_parallel_for(n_tasks, 1, gemm_tiles_task, &g);
    if (g.failed)
        cx_cpu_record_error(CX_ENOMEM, "gemm: out of memory for packing buffers (%d x %d x %d)", p->M, p->N,
                p->K);
}

void cx_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
             int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    cx_gemm_matrix a = cx_gemm_matrix_a(A, lda, trans_a, 0);
    cx_gemm_matrix b = cx_gemm_matrix_b(B, ldb, trans_b, 0);
    cx_gemm_problem p = {0};
    p.M = M;
    p.N = N;
    p.K = K;
    p.items = 1;
    p.alpha = alpha;
    p.beta = beta;
    p.A = (cx_gemm_operand){cx_gemm_pack_matrix, &a};
    p.B = (cx_gemm_operand){cx_gemm_pack_matrix, &b};
    p.C = C;
    p.ldc = ldc;
    cx_gemm_run(&p);
}
