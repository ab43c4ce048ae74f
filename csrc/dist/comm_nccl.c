/* NCCL backend: not implemented yet (issue 9 follow-up; it needs the CUDA worker path of
 * kernels/ to hold device buffers). Creating one is an error, never a silent fallback. */
#include "comm.h"

cx_status cx_comm_nccl_create(const void *unique_id, size_t id_bytes, int rank, int world,
                              double timeout_s, cx_comm **out) {
    (void)unique_id;
    (void)id_bytes;
    (void)rank;
    (void)world;
    (void)timeout_s;
    *out = NULL;
    return cx_fail(CX_ERUNTIME, "the NCCL backend is not implemented in this build of codext "
                   "yet; GPU data-parallel training is unavailable (CPU workers use the "
                   "shared-memory backend)");
}
