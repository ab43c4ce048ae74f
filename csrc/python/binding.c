/* Helpers shared by every binding file (see binding.h). */
#include "binding.h"

#include <string.h>

/* ---- errors ----------------------------------------------------------------------- */

PyObject *cx_py_error(cx_status status) {
    PyObject *type = PyExc_RuntimeError;
    switch (status) {
    case CX_EINVAL: type = PyExc_ValueError; break;
    case CX_EIO: type = PyExc_OSError; break;
    case CX_ENOMEM: type = PyExc_MemoryError; break;
    case CX_EKEY: type = PyExc_KeyError; break;
    default: break;
    }
    PyErr_SetString(type, cx_last_error());
    return NULL;
}

/* Returns a new reference to a C-contiguous, aligned float32 array viewing or copying
 * `obj`; fails with ValueError naming `what` when obj is not a real numeric array. */
PyArrayObject *cx_py_as_float32(PyObject *obj, const char *what) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a numpy array, got %s", what, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)obj;
    int kind = PyArray_DESCR(arr)->kind;
    if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b') {
        PyErr_Format(PyExc_TypeError, "%s must hold real numbers, got dtype %R", what,
                     (PyObject *)PyArray_DESCR(arr));
        return NULL;
    }
    return (PyArrayObject *)PyArray_FROMANY(obj, NPY_FLOAT32, 0, 0,
                                            NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
}

PyObject *cx_py_view(PyObject *owner, void *data, size_t n, int npy_type) {
    npy_intp dims[1] = {(npy_intp)n};
    PyObject *arr = PyArray_SimpleNewFromData(1, dims, npy_type, data);
    if (!arr)
        return NULL;
    Py_INCREF(owner);
    if (PyArray_SetBaseObject((PyArrayObject *)arr, owner) < 0) {
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

int cx_py_string_dict(PyObject *dict, const char *what, Py_ssize_t *n, const char ***keys,
                      const char ***values) {
    *n = dict ? PyDict_Size(dict) : 0;
    *keys = PyMem_Calloc((size_t)*n + 1, sizeof **keys);
    *values = PyMem_Calloc((size_t)*n + 1, sizeof **values);
    if (!*keys || !*values) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t pos = 0, k = 0;
    PyObject *key, *value;
    while (dict && PyDict_Next(dict, &pos, &key, &value)) {
        (*keys)[k] = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
        (*values)[k] = PyUnicode_Check(value) ? PyUnicode_AsUTF8(value) : NULL;
        if (!(*keys)[k] || !(*values)[k]) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "%s keys and values must be str", what);
            return -1;
        }
        k++;
    }
    return 0;
}
