/* codext._C: the one place that speaks the CPython and NumPy C APIs.
 *
 * It converts NumPy arrays to the engine's float buffers and back, maps cx_status
 * values to Python exceptions, and releases the GIL around compute. Everything else
 * (ops, models, file formats) is plain C under csrc/. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define PY_ARRAY_UNIQUE_SYMBOL codext_ARRAY_API
#include <numpy/arrayobject.h>

#include "binding.h"
#include "../core/cuda_loader.h"
#include "../io/safetensors.h"
#include "../testing/op_call.h"

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

PyObject *cx_py_param_table(const cx_param_table *t) {
    PyObject *list = PyList_New(t->count);
    if (!list)
        return NULL;
    for (int i = 0; i < t->count; i++) {
        const cx_param *p = &t->items[i];
        PyObject *shape = PyTuple_New(p->ndim);
        if (!shape) {
            Py_DECREF(list);
            return NULL;
        }
        for (int d = 0; d < p->ndim; d++)
            PyTuple_SET_ITEM(shape, d, PyLong_FromLongLong(p->shape[d]));
        PyObject *row = Py_BuildValue("(sNnO)", p->name, shape, (Py_ssize_t)p->offset,
                                      p->decay ? Py_True : Py_False);
        if (!row) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, row);
    }
    return list;
}

/* ---- build info and threads -------------------------------------------------------- */

#ifndef CX_BUILD_CUDA
#define CX_BUILD_CUDA 0
#define CX_BUILD_CUDA_VERSION ""
#define CX_BUILD_CUDNN_VERSION ""
#define CX_BUILD_NCCL_VERSION ""
#define CX_BUILD_CUDA_ARCHS ""
#endif

static PyObject *py_build_info(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    PyObject *archs = PyList_New(0);
    if (!archs)
        return NULL;
    if (CX_BUILD_CUDA) {
        char text[256];
        snprintf(text, sizeof text, "%s", CX_BUILD_CUDA_ARCHS);
        for (char *tok = strtok(text, ";"); tok; tok = strtok(NULL, ";")) {
            PyObject *s = PyUnicode_FromString(tok);
            if (!s || PyList_Append(archs, s) < 0) {
                Py_XDECREF(s);
                Py_DECREF(archs);
                return NULL;
            }
            Py_DECREF(s);
        }
    }
    PyObject *none = Py_None;
    return Py_BuildValue(
        "{s:O, s:N, s:N, s:N, s:N, s:i, s:s, s:s}",
        "cuda", CX_BUILD_CUDA ? Py_True : Py_False,
        "cuda_version", CX_BUILD_CUDA ? PyUnicode_FromString(CX_BUILD_CUDA_VERSION) : (Py_INCREF(none), none),
        "cudnn_version", CX_BUILD_CUDA ? PyUnicode_FromString(CX_BUILD_CUDNN_VERSION) : (Py_INCREF(none), none),
        "nccl_version", CX_BUILD_CUDA ? PyUnicode_FromString(CX_BUILD_NCCL_VERSION) : (Py_INCREF(none), none),
        "cuda_archs", archs,
        "cpu_threads", cx_get_num_threads(),
        "compiler", __VERSION__,
        "numpy_target_api", NPY_FEATURE_VERSION_STRING);
}

static PyObject *py_get_num_threads(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    return PyLong_FromLong(cx_get_num_threads());
}

static PyObject *py_set_num_threads(PyObject *self, PyObject *arg) {
    (void)self;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 1 || n > 256) {
        PyErr_Format(PyExc_ValueError, "num_threads must be in 1..256, got %ld", n);
        return NULL;
    }
    cx_status st = cx_set_num_threads((int)n);
    if (st != CX_OK)
        return cx_py_error(st);
    Py_RETURN_NONE;
}

/* ---- single ops, for the tests ------------------------------------------------------ */

typedef struct {
    PyObject *outputs; /* list */
} op_binding;

static float *op_alloc_out(cx_op_call *call, int index, int ndim, const int64_t *shape) {
    op_binding *b = call->binding;
    if (index != PyList_GET_SIZE(b->outputs) || ndim < 0 || ndim > CX_OPCALL_MAX_DIMS)
        return NULL;
    npy_intp dims[CX_OPCALL_MAX_DIMS];
    for (int d = 0; d < ndim; d++)
        dims[d] = (npy_intp)shape[d];
    /* Called with the GIL released: take it for the allocation. */
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *arr = PyArray_ZEROS(ndim, dims, NPY_FLOAT32, 0);
    float *data = NULL;
    if (arr) {
        if (PyList_Append(b->outputs, arr) == 0)
            data = (float *)PyArray_DATA((PyArrayObject *)arr);
        Py_DECREF(arr);
    }
    PyGILState_Release(gil);
    return data;
}

static PyObject *py_op(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *keywords[] = {"name", "inputs", "iargs", "fargs", "backward", "backend", NULL};
    const char *name;
    PyObject *inputs, *iargs = NULL, *fargs = NULL;
    int backward = 0;
    const char *backend_name = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sO|OOpz", keywords, &name, &inputs, &iargs,
                                     &fargs, &backward, &backend_name))
        return NULL;
    /* backend=None: the CPU test wrappers of csrc/testing; "cpu" or "cuda": the backend op
     * runner (cuda_loader.h), which calls the backend's table the same way for both. */
    const cx_op_entry *entry = NULL;
    cx_backend *backend = NULL;
    if (!backend_name) {
        entry = cx_op_find(name);
        if (!entry) {
            PyErr_Format(PyExc_KeyError, "no op named '%s'", name);
            return NULL;
        }
    } else if (strcmp(backend_name, "cpu") == 0) {
        backend = cx_backend_cpu();
    } else if (strcmp(backend_name, "cuda") == 0) {
        cx_status bst;
        Py_BEGIN_ALLOW_THREADS
        bst = cx_cuda_shared_backend(&backend);
        Py_END_ALLOW_THREADS
        if (bst != CX_OK)
            return cx_py_error(bst);
    } else {
        PyErr_Format(PyExc_ValueError, "backend must be None, 'cpu' or 'cuda', got '%s'",
                     backend_name);
        return NULL;
    }
    PyObject *in_seq = PySequence_Fast(inputs, "inputs must be a sequence of arrays");
    if (!in_seq)
        return NULL;
    cx_op_call call;
    memset(&call, 0, sizeof call);
    PyArrayObject *held[CX_OPCALL_MAX_TENSORS] = {0};
    PyObject *result = NULL;
    op_binding binding = {PyList_New(0)};
    if (!binding.outputs)
        goto done;
    Py_ssize_t n_in = PySequence_Fast_GET_SIZE(in_seq);
    if (n_in > CX_OPCALL_MAX_TENSORS) {
        PyErr_Format(PyExc_ValueError, "at most %d inputs", CX_OPCALL_MAX_TENSORS);
        goto done;
    }
    call.n_in = (int)n_in;
    for (Py_ssize_t i = 0; i < n_in; i++) {
        held[i] = cx_py_as_float32(PySequence_Fast_GET_ITEM(in_seq, i), "op input");
        if (!held[i])
            goto done;
        if (PyArray_NDIM(held[i]) > CX_OPCALL_MAX_DIMS) {
            PyErr_Format(PyExc_ValueError, "input %zd has more than %d dims", i, CX_OPCALL_MAX_DIMS);
            goto done;
        }
        call.in[i] = PyArray_DATA(held[i]);
        call.in_ndim[i] = PyArray_NDIM(held[i]);
        for (int d = 0; d < call.in_ndim[i]; d++)
            call.in_shape[i][d] = PyArray_DIM(held[i], d);
    }
    if (iargs && iargs != Py_None) {
        PyObject *seq = PySequence_Fast(iargs, "iargs must be a sequence of ints");
        if (!seq)
            goto done;
        call.n_iargs = (int)PySequence_Fast_GET_SIZE(seq);
        for (int i = 0; i < call.n_iargs && i < CX_OPCALL_MAX_ARGS; i++)
            call.iargs[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
        Py_DECREF(seq);
        if (PyErr_Occurred())
            goto done;
    }
    if (fargs && fargs != Py_None) {
        PyObject *seq = PySequence_Fast(fargs, "fargs must be a sequence of floats");
        if (!seq)
            goto done;
        call.n_fargs = (int)PySequence_Fast_GET_SIZE(seq);
        for (int i = 0; i < call.n_fargs && i < CX_OPCALL_MAX_ARGS; i++)
            call.fargs[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        Py_DECREF(seq);
        if (PyErr_Occurred())
            goto done;
    }
    if (call.n_iargs > CX_OPCALL_MAX_ARGS || call.n_fargs > CX_OPCALL_MAX_ARGS) {
        PyErr_Format(PyExc_ValueError, "at most %d integer and float arguments", CX_OPCALL_MAX_ARGS);
        goto done;
    }
    call.backward = backward;
    call.alloc_out = op_alloc_out;
    call.binding = &binding;
    cx_status st;
    Py_BEGIN_ALLOW_THREADS
    st = backend ? cx_backend_op_run(backend, name, &call) : entry->run(&call);
    Py_END_ALLOW_THREADS
    if (st != CX_OK) {
        if (!PyErr_Occurred())
            cx_py_error(st);
        goto done;
    }
    result = binding.outputs;
    binding.outputs = NULL;
done:
    for (int i = 0; i < CX_OPCALL_MAX_TENSORS; i++)
        Py_XDECREF(held[i]);
    Py_XDECREF(binding.outputs);
    Py_DECREF(in_seq);
    return result;
}

static void collect_name(const char *name, void *ctx) {
    PyObject *s = PyUnicode_FromString(name);
    if (s) {
        PyList_Append((PyObject *)ctx, s);
        Py_DECREF(s);
    }
}

static PyObject *py_op_names(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    PyObject *names = PyList_New(0);
    if (names)
        cx_op_each(collect_name, names);
    return names;
}

static PyObject *py_backend_op_names(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    PyObject *names = PyList_New(0);
    if (names)
        cx_backend_op_each(collect_name, names);
    return names;
}

/* ---- the CUDA backend, loaded lazily (cuda_loader.h) --------------------------------- */

static PyObject *py_cuda_backend_available(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    char reason[2048];
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = cx_cuda_available(reason, sizeof reason);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(Os)", ok ? Py_True : Py_False, reason);
}

/* ---- safetensors -------------------------------------------------------------------- */

static PyObject *py_safetensors_load(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *path_obj;
    if (!PyArg_ParseTuple(args, "O&", PyUnicode_FSConverter, &path_obj))
        return NULL;
    cx_st_file *file = NULL;
    cx_status st;
    const char *path = PyBytes_AS_STRING(path_obj);
    Py_BEGIN_ALLOW_THREADS
    st = cx_st_open(path, &file);
    Py_END_ALLOW_THREADS
    Py_DECREF(path_obj);
    if (st != CX_OK)
        return cx_py_error(st);
    PyObject *tensors = PyDict_New(), *metadata = PyDict_New(), *dtypes = PyDict_New();
    PyObject *result = NULL;
    if (!tensors || !metadata || !dtypes)
        goto done;
    for (int i = 0; i < file->n_tensors; i++) {
        const cx_st_tensor *t = &file->tensors[i];
        npy_intp dims[CX_ST_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++)
            dims[d] = (npy_intp)t->shape[d];
        PyObject *arr = PyArray_EMPTY(t->ndim, dims, NPY_FLOAT32, 0);
        if (!arr)
            goto done;
        st = cx_st_read_f32(file, i, (float *)PyArray_DATA((PyArrayObject *)arr));
        PyObject *dtype = PyUnicode_FromString(t->dtype);
        int bad = st != CX_OK || !dtype || PyDict_SetItemString(tensors, t->name, arr) < 0 ||
                  PyDict_SetItemString(dtypes, t->name, dtype) < 0;
        Py_DECREF(arr);
        Py_XDECREF(dtype);
        if (bad) {
            if (st != CX_OK)
                cx_py_error(st);
            goto done;
        }
    }
    for (int i = 0; i < file->n_metadata; i++) {
        PyObject *v = PyUnicode_FromString(file->metadata_values[i]);
        if (!v || PyDict_SetItemString(metadata, file->metadata_keys[i], v) < 0) {
            Py_XDECREF(v);
            goto done;
        }
        Py_DECREF(v);
    }
    result = Py_BuildValue("(OOO)", tensors, metadata, dtypes);
done:
    Py_XDECREF(tensors);
    Py_XDECREF(metadata);
    Py_XDECREF(dtypes);
    cx_st_close(file);
    return result;
}

/* safetensors_save(path, names: list[str], arrays: list[ndarray], metadata: dict[str,str]) */
static PyObject *py_safetensors_save(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *path_obj, *names, *arrays, *metadata;
    if (!PyArg_ParseTuple(args, "O&O!O!O!", PyUnicode_FSConverter, &path_obj, &PyList_Type, &names,
                          &PyList_Type, &arrays, &PyDict_Type, &metadata))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(names);
    Py_ssize_t n_meta = PyDict_Size(metadata);
    PyObject *result = NULL;
    PyArrayObject **held = PyMem_Calloc((size_t)n + 1, sizeof *held);
    const char **c_names = PyMem_Calloc((size_t)n + 1, sizeof *c_names);
    int *ndims = PyMem_Calloc((size_t)n + 1, sizeof *ndims);
    int64_t (*shapes)[CX_ST_MAX_DIMS] = PyMem_Calloc((size_t)n + 1, sizeof *shapes);
    const int64_t **shape_ptrs = PyMem_Calloc((size_t)n + 1, sizeof *shape_ptrs);
    const float **data = PyMem_Calloc((size_t)n + 1, sizeof *data);
    const char **keys = NULL, **values = NULL;
    if (!held || !c_names || !ndims || !shapes || !shape_ptrs || !data) {
        PyErr_NoMemory();
        goto done;
    }
    if (PyList_GET_SIZE(arrays) != n) {
        PyErr_SetString(PyExc_ValueError, "names and arrays differ in length");
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        c_names[i] = PyUnicode_AsUTF8(PyList_GET_ITEM(names, i));
        if (!c_names[i])
            goto done;
        held[i] = cx_py_as_float32(PyList_GET_ITEM(arrays, i), c_names[i]);
        if (!held[i])
            goto done;
        if (PyArray_NDIM(held[i]) > CX_ST_MAX_DIMS) {
            PyErr_Format(PyExc_ValueError, "%s has more than %d dims", c_names[i], CX_ST_MAX_DIMS);
            goto done;
        }
        ndims[i] = PyArray_NDIM(held[i]);
        for (int d = 0; d < ndims[i]; d++)
            shapes[i][d] = PyArray_DIM(held[i], d);
        shape_ptrs[i] = shapes[i];
        data[i] = PyArray_DATA(held[i]);
    }
    if (cx_py_string_dict(metadata, "safetensors metadata", &n_meta, &keys, &values) < 0)
        goto done;
    cx_status st;
    const char *path = PyBytes_AS_STRING(path_obj);
    Py_BEGIN_ALLOW_THREADS
    st = cx_st_write_f32(path, (int)n, c_names, ndims, shape_ptrs, data, (int)n_meta, keys, values);
    Py_END_ALLOW_THREADS
    if (st != CX_OK) {
        cx_py_error(st);
        goto done;
    }
    Py_INCREF(Py_None);
    result = Py_None;
done:
    if (held)
        for (Py_ssize_t i = 0; i < n; i++)
            Py_XDECREF(held[i]);
    PyMem_Free(held);
    PyMem_Free(c_names);
    PyMem_Free(ndims);
    PyMem_Free(shapes);
    PyMem_Free(shape_ptrs);
    PyMem_Free(data);
    PyMem_Free(keys);
    PyMem_Free(values);
    Py_DECREF(path_obj);
    return result;
}

/* ---- module ------------------------------------------------------------------------ */

static PyMethodDef module_methods[] = {
    {"build_info", py_build_info, METH_NOARGS, "What this build compiled in."},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "CPU threads used by the engine."},
    {"set_num_threads", py_set_num_threads, METH_O, "Set the CPU threads used by the engine."},
    {"op", (PyCFunction)(void (*)(void))py_op, METH_VARARGS | METH_KEYWORDS,
     "op(name, inputs, iargs=(), fargs=(), backward=False, backend=None) -> list of float32 "
     "arrays (tests). backend='cpu'|'cuda' runs the backend table's op (see backend_op_names)."},
    {"op_names", py_op_names, METH_NOARGS, "Names of the ops reachable through op()."},
    {"backend_op_names", py_backend_op_names, METH_NOARGS,
     "Names of the ops reachable through op(..., backend='cpu'|'cuda')."},
    {"cuda_backend_available", py_cuda_backend_available, METH_NOARGS,
     "cuda_backend_available() -> (bool, reason). Loads libcodext_cuda.so and the CUDA "
     "libraries into this process: for GPU workers and tests, never the notebook."},
    {"safetensors_load", py_safetensors_load, METH_VARARGS,
     "safetensors_load(path) -> (tensors: dict[str, float32 ndarray], metadata: dict, dtypes: dict)"},
    {"safetensors_save", py_safetensors_save, METH_VARARGS,
     "safetensors_save(path, names, arrays, metadata): float32, atomic."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "codext._C", "codext's native engine.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__C(void) {
    import_array();
    PyObject *module = PyModule_Create(&module_def);
    if (!module)
        return NULL;
    if (PyModule_AddFunctions(module, cx_py_metrics_methods) < 0 ||
        PyModule_AddFunctions(module, cx_py_data_methods) < 0 ||
        PyModule_AddFunctions(module, cx_py_train_methods) < 0 ||
        PyModule_AddFunctions(module, cx_py_dist_methods) < 0 ||
        PyModule_AddFunctions(module, cx_py_store_methods) < 0 || cx_py_add_types(module) < 0 ||
        cx_py_add_dist_types(module) < 0 || cx_py_add_store_types(module) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
