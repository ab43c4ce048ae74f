/* Prototypes of the CPU backend's ops: one per line of the op table (ops/op_list.h),
 * where the shapes are documented. Implementations live in one file per op
 * family: backend_cpu.c (memory), conv.c, linear.c (and gemm.c), norm.c, pointwise.c, pool.c,
 * attention.c. backend_cpu.c fills the table. */
#ifndef CX_CPU_OPS_H
#define CX_CPU_OPS_H

#include "../ops/ops.h"

/* Hot loops marked VECTOR_CLONES are compiled for AVX2 and for the baseline ISA and
 * picked at load time. Both clones do the same IEEE operations in the same order
 * (-std=c11 turns off FMA contraction), so results do not depend on the machine. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* cpu_<op> for every op of op_list.h (shapes documented there). */
#define CX_OP(name, params) void cpu_##name params;
#include "../ops/op_list.h"
#undef CX_OP

#endif
