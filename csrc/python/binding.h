/* Shared by every CPython binding file: the NumPy API import and the helpers of
 * binding.c. Depends on core only, so the metrics, data and I/O bindings compile without
 * the model (model_binding.h adds what the model and trainer bindings share). */
#ifndef CX_BINDING_H
#define CX_BINDING_H

#include <Python.h>
#ifndef PY_ARRAY_UNIQUE_SYMBOL
#define PY_ARRAY_UNIQUE_SYMBOL codext_ARRAY_API
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include "../core/cx.h"
#include "../dist/comm.h"

/* Sets the Python exception for a failed status (message from cx_last_error()) and
 * returns NULL. */
PyObject *cx_py_error(cx_status status);
/* New reference to a C-contiguous float32 array made from obj (TypeError if obj is not
 * a numeric ndarray; `what` names it in the message). */
PyArrayObject *cx_py_as_float32(PyObject *obj, const char *what);
/* A 1-D array of npy_type viewing n items of data (no copy), keeping owner alive. */
PyObject *cx_py_view(PyObject *owner, void *data, size_t n, int npy_type);
/* Borrowed UTF-8 views of a str -> str dict (NULL dict: empty) in *keys / *values, which
 * the caller frees with PyMem_Free (also after a failure). -1 with TypeError naming `what`
 * when a key or value is not a str. */
int cx_py_string_dict(PyObject *dict, const char *what, Py_ssize_t *n, const char ***keys,
                      const char ***values);

/* Function tables of the binding files that need no model (each ends with a {NULL}
 * entry); module.c adds them to codext._C. */
extern PyMethodDef cx_py_metrics_methods[]; /* metrics_binding.c */
extern PyMethodDef cx_py_data_methods[];    /* data_binding.c */
extern PyMethodDef cx_py_dist_methods[];    /* dist_binding.c */
extern PyMethodDef cx_py_store_methods[];   /* store_binding.c */
/* _C.ShmComm (dist_binding.c), _C.StoreServer/StoreClient (store_binding.c); -1 with an
 * exception set. */
int cx_py_add_dist_types(PyObject *module);
int cx_py_add_store_types(PyObject *module);
/* The communicator behind a _C.ShmComm, or NULL with TypeError/RuntimeError set. */
cx_comm *cx_py_comm(PyObject *obj);

#endif
