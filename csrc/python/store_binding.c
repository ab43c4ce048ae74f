/* _C.StoreServer and _C.StoreClient: the rendezvous store (csrc/dist/store.h) for the
 * launcher and its workers; _C.sha256 (our own SHA-256). */
#define PY_SSIZE_T_CLEAN
#include "binding.h"
#include "../dist/sha256.h"
#include "../dist/store.h"

/* ---- server -------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    cx_store_server *server;
} ServerObject;

static int server_init(ServerObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"host", "port", "secret", NULL};
    const char *host;
    int port;
    Py_buffer secret;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "siy*", keywords, &host, &port, &secret))
        return -1;
    if (self->server) {
        PyBuffer_Release(&secret);
        PyErr_SetString(PyExc_RuntimeError, "StoreServer is already running");
        return -1;
    }
    cx_store_server *server = NULL;
    cx_status st = cx_store_server_start(host, port, secret.buf, (size_t)secret.len, &server);
    PyBuffer_Release(&secret);
    if (st != CX_OK) {
        cx_py_error(st);
        return -1;
    }
    self->server = server;
    return 0;
}

static void server_stop(ServerObject *self) {
    cx_store_server *server = self->server;
    self->server = NULL;
    if (server) {
        Py_BEGIN_ALLOW_THREADS
        cx_store_server_stop(server);
        Py_END_ALLOW_THREADS
    }
}

static void server_dealloc(ServerObject *self) {
    server_stop(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *server_close(ServerObject *self, PyObject *unused) {
    server_stop(self);
    Py_RETURN_NONE;
}

static PyObject *server_get_port(ServerObject *self, void *unused) {
    return PyLong_FromLong(self->server ? cx_store_server_port(self->server) : -1);
}

static PyObject *server_stats(ServerObject *self, PyObject *unused) {
    if (!self->server) {
        PyErr_SetString(PyExc_RuntimeError, "the store is closed");
        return NULL;
    }
    int64_t accepted, refused, authenticated;
    cx_store_server_stats(self->server, &accepted, &refused, &authenticated);
    return Py_BuildValue("{sLsLsL}", "accepted", (long long)accepted, "refused",
                         (long long)refused, "authenticated", (long long)authenticated);
}

static PyMethodDef server_methods[] = {
    {"close", (PyCFunction)server_close, METH_NOARGS, "Stops the server, closes its sockets."},
    {"stats", (PyCFunction)server_stats, METH_NOARGS,
     "{'accepted', 'refused', 'authenticated'}: connection counts."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef server_getset[] = {
    {"port", (getter)server_get_port, NULL, "The port it listens on.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ServerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "codext._C.StoreServer",
    .tp_basicsize = sizeof(ServerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "StoreServer(host, port, secret): the rendezvous store on its own thread; "
              "port 0 picks a free port (read .port). Only clients proving `secret` get in.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)server_init,
    .tp_dealloc = (destructor)server_dealloc,
    .tp_methods = server_methods,
    .tp_getset = server_getset,
};

/* ---- client -------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    cx_store_client *client;
    double timeout;
} ClientObject;

static int client_init(ClientObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"host", "port", "secret", "timeout", NULL};
    const char *host;
    int port;
    Py_buffer secret;
    double timeout = 60.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "siy*|d", keywords, &host, &port, &secret,
                                     &timeout))
        return -1;
    cx_store_client *client = NULL;
    cx_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cx_store_connect(host, port, secret.buf, (size_t)secret.len, timeout, &client);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&secret);
    if (st != CX_OK) {
        cx_py_error(st);
        return -1;
    }
    cx_store_close(self->client);
    self->client = client;
    self->timeout = timeout;
    return 0;
}

static void client_dealloc(ClientObject *self) {
    cx_store_close(self->client);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int connected(ClientObject *self) {
    if (!self->client)
        PyErr_SetString(PyExc_RuntimeError, "the store client is closed");
    return self->client != NULL;
}

static PyObject *client_set(ClientObject *self, PyObject *args) {
    const char *key;
    Py_buffer value;
    if (!PyArg_ParseTuple(args, "sy*", &key, &value))
        return NULL;
    if (!connected(self)) {
        PyBuffer_Release(&value);
        return NULL;
    }
    cx_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cx_store_set(self->client, key, value.buf, (size_t)value.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&value);
    if (st != CX_OK)
        return cx_py_error(st);
    Py_RETURN_NONE;
}

static PyObject *client_get(ClientObject *self, PyObject *args) {
    const char *key;
    double timeout = -1.0;
    if (!PyArg_ParseTuple(args, "s|d", &key, &timeout) || !connected(self))
        return NULL;
    if (timeout < 0)
        timeout = self->timeout;
    char *value = PyMem_Malloc(CX_STORE_MAX_VALUE);
    if (!value)
        return PyErr_NoMemory();
    size_t n = 0;
    cx_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cx_store_get(self->client, key, timeout, value, CX_STORE_MAX_VALUE, &n);
    Py_END_ALLOW_THREADS
    PyObject *result = st == CX_OK ? PyBytes_FromStringAndSize(value, (Py_ssize_t)n)
                                   : cx_py_error(st);
    PyMem_Free(value);
    return result;
}

static PyObject *client_add(ClientObject *self, PyObject *args) {
    const char *key;
    long long delta;
    if (!PyArg_ParseTuple(args, "sL", &key, &delta) || !connected(self))
        return NULL;
    int64_t result = 0;
    cx_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cx_store_add(self->client, key, (int64_t)delta, &result);
    Py_END_ALLOW_THREADS
    if (st != CX_OK)
        return cx_py_error(st);
    return PyLong_FromLongLong((long long)result);
}

static PyObject *client_close(ClientObject *self, PyObject *unused) {
    cx_store_close(self->client);
    self->client = NULL;
    Py_RETURN_NONE;
}

static PyMethodDef client_methods[] = {
    {"set", (PyCFunction)client_set, METH_VARARGS, "set(key, value: bytes)"},
    {"get", (PyCFunction)client_get, METH_VARARGS,
     "get(key, timeout=None) -> bytes: waits until the key is set (RuntimeError after timeout)."},
    {"add", (PyCFunction)client_add, METH_VARARGS, "add(key, delta) -> new counter value."},
    {"close", (PyCFunction)client_close, METH_NOARGS, "Closes the connection."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ClientType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "codext._C.StoreClient",
    .tp_basicsize = sizeof(ClientObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "StoreClient(host, port, secret, timeout=60.0): an authenticated connection to "
              "a StoreServer (retries until the server is up or timeout passes).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)client_init,
    .tp_dealloc = (destructor)client_dealloc,
    .tp_methods = client_methods,
};

/* ---- module ----------------------------------------------------------------------------------- */

static PyObject *py_sha256(PyObject *mod, PyObject *arg) {
    Py_buffer data;
    if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0)
        return NULL;
    unsigned char out[CX_SHA256_BYTES];
    cx_sha256(data.buf, (size_t)data.len, out);
    PyBuffer_Release(&data);
    return PyBytes_FromStringAndSize((const char *)out, CX_SHA256_BYTES);
}

PyMethodDef cx_py_store_methods[] = {
    {"sha256", py_sha256, METH_O, "sha256(bytes) -> digest (codext's own implementation)."},
    {NULL, NULL, 0, NULL},
};

int cx_py_add_store_types(PyObject *module) {
    PyTypeObject *types[] = {&ServerType, &ClientType};
    const char *names[] = {"StoreServer", "StoreClient"};
    for (int i = 0; i < 2; i++) {
        if (PyType_Ready(types[i]) < 0)
            return -1;
        Py_INCREF(types[i]);
        if (PyModule_AddObject(module, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            return -1;
        }
    }
    return 0;
}
