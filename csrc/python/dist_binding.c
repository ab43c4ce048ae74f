/* _C.ShmComm: the shared-memory collectives (csrc/dist/comm.h) for codext's workers and
 * tests, and _C.NcclComm (a subtype: the same methods) for GPU ranks. The methods take
 * host arrays on both (NCCL stages them through device memory: comm.h's host route); the
 * trainer uses the communicator itself. Every call releases the GIL while it waits on the
 * other ranks. */
#define PY_SSIZE_T_CLEAN
#include "binding.h"
#include "../dist/comm.h"

typedef struct {
    PyObject_HEAD
    cx_comm *comm;
    int busy; /* a collective is running with the GIL released */
} CommObject;

static int comm_init(CommObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"name", "rank", "world", "timeout", "capacity", NULL};
    const char *name;
    int rank, world;
    double timeout = 600.0;
    Py_ssize_t capacity = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sii|dn", keywords, &name, &rank, &world,
                                     &timeout, &capacity))
        return -1;
    if (self->comm) {
        PyErr_SetString(PyExc_RuntimeError, "ShmComm is already connected");
        return -1;
    }
    if (capacity < 0) {
        PyErr_Format(PyExc_ValueError, "capacity must be >= 0, got %zd", capacity);
        return -1;
    }
    cx_comm *comm = NULL;
    cx_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cx_comm_shm_create(name, rank, world, timeout, (size_t)capacity, &comm);
    Py_END_ALLOW_THREADS
    if (st != CX_OK) {
        cx_py_error(st);
        return -1;
    }
    self->comm = comm;
    return 0;
}

static void comm_dealloc(CommObject *self) {
    cx_comm_destroy(self->comm);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int usable(CommObject *self) {
    if (!self->comm) {
        PyErr_SetString(PyExc_RuntimeError, "the communicator is closed");
        return 0;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "a collective is already running on this "
                        "communicator (one thread at a time)");
        return 0;
    }
    return 1;
}

/* Runs op on a writable C-contiguous buffer with the GIL released. */
typedef cx_status (*buffer_op)(cx_comm *comm, void *data, size_t n_bytes, int root);

static cx_status reduce_sum(cx_comm *comm, void *data, size_t n_bytes, int root) {
    (void)root;
    return cx_comm_host_all_reduce_sum(comm, data, n_bytes / sizeof(float));
}

static cx_status reduce_mean(cx_comm *comm, void *data, size_t n_bytes, int root) {
    (void)root;
    return cx_comm_host_all_reduce_mean(comm, data, n_bytes / sizeof(float));
}

static PyObject *run_on_buffer(CommObject *self, PyObject *obj, int need_float32, buffer_op op,
                               int root) {
    if (!usable(self))
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    if (need_float32 && (view.itemsize != 4 || !view.format || strcmp(view.format, "f") != 0)) {
        PyErr_Format(PyExc_TypeError, "all_reduce takes a float32 array, got format '%s'",
                     view.format ? view.format : "B");
        PyBuffer_Release(&view);
        return NULL;
    }
    cx_status st;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    st = op(self->comm, view.buf, (size_t)view.len, root);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    PyBuffer_Release(&view);
    if (st != CX_OK)
        return cx_py_error(st);
    Py_RETURN_NONE;
}

static PyObject *comm_all_reduce(CommObject *self, PyObject *arr) {
    return run_on_buffer(self, arr, 1, reduce_sum, 0);
}

static PyObject *comm_all_reduce_mean(CommObject *self, PyObject *arr) {
    return run_on_buffer(self, arr, 1, reduce_mean, 0);
}

static PyObject *comm_broadcast(CommObject *self, PyObject *args) {
    PyObject *arr;
    int root = 0;
    if (!PyArg_ParseTuple(args, "O|i", &arr, &root))
        return NULL;
    return run_on_buffer(self, arr, 0, cx_comm_host_broadcast, root);
}

static PyObject *comm_barrier(CommObject *self, PyObject *unused) {
    if (!usable(self))
        return NULL;
    cx_status st;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    st = cx_comm_barrier(self->comm);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (st != CX_OK)
        return cx_py_error(st);
    Py_RETURN_NONE;
}

static PyObject *comm_abort(CommObject *self, PyObject *reason) {
    const char *text = PyUnicode_AsUTF8(reason);
    if (!text)
        return NULL;
    if (self->comm)
        cx_comm_abort(self->comm, text); /* never blocks: allowed while busy */
    Py_RETURN_NONE;
}

static PyObject *comm_stall_next_all_reduce(CommObject *self, PyObject *unused) {
    if (!usable(self))
        return NULL;
    cx_comm_stall_next_all_reduce(self->comm);
    Py_RETURN_NONE;
}

static PyObject *comm_close(CommObject *self, PyObject *unused) {
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "cannot close a communicator while a collective runs");
        return NULL;
    }
    cx_comm_destroy(self->comm);
    self->comm = NULL;
    Py_RETURN_NONE;
}

static PyObject *comm_get_rank(CommObject *self, void *unused) {
    return self->comm ? PyLong_FromLong(self->comm->rank) : PyLong_FromLong(-1);
}

static PyObject *comm_get_world(CommObject *self, void *unused) {
    return self->comm ? PyLong_FromLong(self->comm->world) : PyLong_FromLong(0);
}

static PyMethodDef comm_methods[] = {
    {"all_reduce", (PyCFunction)comm_all_reduce, METH_O,
     "all_reduce(a): float32 C-contiguous array summed over the ranks in place (rank order)."},
    {"all_reduce_mean", (PyCFunction)comm_all_reduce_mean, METH_O,
     "all_reduce_mean(a): the sum, then divided by the world size."},
    {"broadcast", (PyCFunction)comm_broadcast, METH_VARARGS,
     "broadcast(buffer, root=0): root's bytes into every rank's writable buffer."},
    {"barrier", (PyCFunction)comm_barrier, METH_NOARGS, "Waits for every rank."},
    {"abort", (PyCFunction)comm_abort, METH_O,
     "abort(reason): fail the communicator on every rank (wakes waiting ranks)."},
    {"stall_next_all_reduce", (PyCFunction)comm_stall_next_all_reduce, METH_NOARGS,
     "Fault injection for tests (CODEXT_FAULT hang): this rank's next all-reduce, its own "
     "or the trainer's, stalls inside the collective (shared memory: until a rank aborts "
     "the run; NCCL: until this rank's own abort, in practice until it is killed)."},
    {"close", (PyCFunction)comm_close, METH_NOARGS, "Unmaps the segment."},
    {NULL, NULL, 0, NULL},
};

static PyObject *comm_get_backend(CommObject *self, void *unused) {
    if (!self->comm)
        Py_RETURN_NONE;
    return PyUnicode_FromString(self->comm->ops->name);
}

static PyGetSetDef comm_getset[] = {
    {"backend", (getter)comm_get_backend, NULL, "'shm' or 'nccl' (None once closed).", NULL},
    {"rank", (getter)comm_get_rank, NULL, "This process's rank.", NULL},
    {"world", (getter)comm_get_world, NULL, "Number of ranks.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CommType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "codext._C.ShmComm",
    .tp_basicsize = sizeof(CommObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "ShmComm(name, rank, world, timeout=600.0, capacity=0): shared-memory "
              "collectives between `world` processes on this host. Rank 0 creates the "
              "POSIX shared-memory object `name` ('/codext-...'), which is unlinked once all "
              "ranks are attached.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)comm_init,
    .tp_dealloc = (destructor)comm_dealloc,
    .tp_methods = comm_methods,
    .tp_getset = comm_getset,
};

cx_comm *cx_py_comm(PyObject *obj) {
    if (!PyObject_TypeCheck(obj, &CommType)) {
        PyErr_Format(PyExc_TypeError, "expected a codext._C.ShmComm or NcclComm, got %s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    CommObject *self = (CommObject *)obj;
    if (!self->comm)
        PyErr_SetString(PyExc_RuntimeError, "the communicator is closed");
    return self->comm;
}

static PyObject *py_shm_segment_bytes(PyObject *mod, PyObject *args) {
    int world;
    Py_ssize_t capacity = 0;
    if (!PyArg_ParseTuple(args, "i|n", &world, &capacity))
        return NULL;
    if (world < 1 || world > CX_COMM_MAX_RANKS || capacity < 0) {
        PyErr_Format(PyExc_ValueError, "world must lie in 1..%d and capacity be >= 0",
                     CX_COMM_MAX_RANKS);
        return NULL;
    }
    return PyLong_FromSize_t(cx_comm_shm_segment_bytes(world, (size_t)capacity));
}

/* NcclComm(unique_id: bytes, rank, world, timeout=600.0, device=0) */
static int nccl_init(CommObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"unique_id", "rank", "world", "timeout", "device", NULL};
    const char *id;
    Py_ssize_t id_len;
    int rank, world, device = 0;
    double timeout = 600.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y#ii|di", keywords, &id, &id_len, &rank,
                                     &world, &timeout, &device))
        return -1;
    if (self->comm) {
        PyErr_SetString(PyExc_RuntimeError, "NcclComm is already connected");
        return -1;
    }
    if (id_len != CX_COMM_NCCL_ID_BYTES) {
        PyErr_Format(PyExc_ValueError, "an NCCL unique id has %d bytes, got %zd",
                     CX_COMM_NCCL_ID_BYTES, id_len);
        return -1;
    }
    cx_comm *comm = NULL;
    cx_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cx_comm_nccl_create((const unsigned char *)id, rank, world, device, timeout, &comm);
    Py_END_ALLOW_THREADS
    if (st != CX_OK) {
        cx_py_error(st);
        return -1;
    }
    self->comm = comm;
    return 0;
}

static PyTypeObject NcclCommType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "codext._C.NcclComm",
    .tp_basicsize = sizeof(CommObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "NcclComm(unique_id, rank, world, timeout=600.0, device=0): the NCCL "
              "collectives of `world` GPU ranks (one process each) on CUDA device `device`, "
              "joined through the bytes of nccl_unique_id() made on one rank. Non-blocking, "
              "every wait bounded by `timeout` (then aborted, raising RuntimeError naming the "
              "operation). Its methods take host arrays (staged through device memory); "
              "Trainer.set_comm reduces the device gradients in place.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)nccl_init,
    .tp_dealloc = (destructor)comm_dealloc,
};

static PyObject *py_nccl_unique_id(PyObject *mod, PyObject *unused) {
    unsigned char id[CX_COMM_NCCL_ID_BYTES];
    cx_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cx_comm_nccl_unique_id(id);
    Py_END_ALLOW_THREADS
    if (st != CX_OK)
        return cx_py_error(st);
    return PyBytes_FromStringAndSize((const char *)id, sizeof id);
}

static PyObject *py_nccl_available(PyObject *mod, PyObject *unused) {
    char reason[1024] = "";
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = cx_comm_nccl_available(reason, sizeof reason, NULL);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(Os)", ok ? Py_True : Py_False, reason);
}

PyMethodDef cx_py_dist_methods[] = {
    {"shm_segment_bytes", py_shm_segment_bytes, METH_VARARGS,
     "shm_segment_bytes(world, capacity=0) -> bytes of /dev/shm a ShmComm needs."},
    {"nccl_available", py_nccl_available, METH_NOARGS,
     "nccl_available() -> (bool, text): whether the CUDA library loads and provides NCCL "
     "(text: its NCCL version, or why not). Loads the CUDA library; creates no context."},
    {"nccl_unique_id", py_nccl_unique_id, METH_NOARGS,
     "nccl_unique_id() -> bytes: a fresh ncclUniqueId for NcclComm (made on one rank)."},
    {NULL, NULL, 0, NULL},
};

int cx_py_add_dist_types(PyObject *module) {
    if (PyType_Ready(&CommType) < 0)
        return -1;
    Py_INCREF(&CommType);
    if (PyModule_AddObject(module, "ShmComm", (PyObject *)&CommType) < 0) {
        Py_DECREF(&CommType);
        return -1;
    }
    NcclCommType.tp_base = &CommType; /* the methods and cx_py_comm's type check */
    if (PyType_Ready(&NcclCommType) < 0)
        return -1;
    Py_INCREF(&NcclCommType);
    if (PyModule_AddObject(module, "NcclComm", (PyObject *)&NcclCommType) < 0) {
        Py_DECREF(&NcclCommType);
        return -1;
    }
    return 0;
}
