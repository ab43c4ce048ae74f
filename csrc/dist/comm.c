/* Backend-independent checks of the collectives (see comm.h). */
#include "comm.h"

#include <time.h>

cx_status cx_comm_all_reduce_sum(cx_comm *comm, float *data, size_t n) {
    if (!comm)
        return cx_fail(CX_EINVAL, "all_reduce on a closed communicator");
    if (n && !data)
        return cx_fail(CX_EINVAL, "all_reduce of %zu floats from a NULL buffer", n);
    return comm->ops->all_reduce_sum(comm, data, n);
}

cx_status cx_comm_all_reduce_mean(cx_comm *comm, float *data, size_t n) {
    if (comm && comm->ops->all_reduce_mean) {
        if (n && !data)
            return cx_fail(CX_EINVAL, "all_reduce of %zu floats from a NULL buffer", n);
        return comm->ops->all_reduce_mean(comm, data, n);
    }
    if (comm && comm->ops->device_buffers)
        return cx_fail(CX_EINVAL, "internal: backend '%s' has no device mean", comm->ops->name);
    return cx_comm_host_all_reduce_mean(comm, data, n);
}

cx_status cx_comm_host_all_reduce_sum(cx_comm *comm, float *data, size_t n) {
    if (!comm || !comm->ops->device_buffers)
        return cx_comm_all_reduce_sum(comm, data, n);
    if (n && !data)
        return cx_fail(CX_EINVAL, "all_reduce of %zu floats from a NULL buffer", n);
    return comm->ops->host_all_reduce_sum(comm, data, n);
}

cx_status cx_comm_host_all_reduce_mean(cx_comm *comm, float *data, size_t n) {
    CX_TRY(cx_comm_host_all_reduce_sum(comm, data, n));
    if (comm->world > 1) {
        float scale = 1.0f / (float)comm->world;
        for (size_t i = 0; i < n; i++)
            data[i] *= scale;
    }
    return CX_OK;
}

cx_status cx_comm_broadcast(cx_comm *comm, void *data, size_t n_bytes, int root) {
    if (!comm)
        return cx_fail(CX_EINVAL, "broadcast on a closed communicator");
    if (root < 0 || root >= comm->world)
        return cx_fail(CX_EINVAL, "broadcast root %d is not a rank of a world of %d", root,
                       comm->world);
    if (n_bytes && !data)
        return cx_fail(CX_EINVAL, "broadcast of %zu bytes from a NULL buffer", n_bytes);
    return comm->ops->broadcast(comm, data, n_bytes, root);
}

cx_status cx_comm_host_broadcast(cx_comm *comm, void *data, size_t n_bytes, int root) {
    if (!comm || !comm->ops->device_buffers)
        return cx_comm_broadcast(comm, data, n_bytes, root);
    if (root < 0 || root >= comm->world)
        return cx_fail(CX_EINVAL, "broadcast root %d is not a rank of a world of %d", root,
                       comm->world);
    if (n_bytes && !data)
        return cx_fail(CX_EINVAL, "broadcast of %zu bytes from a NULL buffer", n_bytes);
    return comm->ops->host_broadcast(comm, data, n_bytes, root);
}

int cx_comm_device_buffers(const cx_comm *comm) { return comm && comm->ops->device_buffers; }

cx_status cx_comm_barrier(cx_comm *comm) {
    if (!comm)
        return cx_fail(CX_EINVAL, "barrier on a closed communicator");
    return comm->ops->barrier(comm);
}

void cx_comm_abort(cx_comm *comm, const char *reason) {
    if (comm)
        comm->ops->abort(comm, reason ? reason : "aborted");
}

void cx_comm_destroy(cx_comm *comm) {
    if (comm)
        comm->ops->destroy(comm);
}

void cx_comm_stall_next_all_reduce(cx_comm *comm) {
    if (comm)
        comm->stall_next_all_reduce = 1;
}

void cx_comm_stall_until_aborted(cx_comm *comm, int (*aborted)(cx_comm *comm)) {
    struct timespec slice = {0, 20000000L};
    while (!aborted(comm))
        nanosleep(&slice, NULL);
}
