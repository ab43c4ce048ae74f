/* codext._C's root: the module definition, which adds every binding file's functions and
 * types (the only place that does), and the few functions of the engine as a whole
 * (build info, threads, the CUDA backend, safetensors).
 *
 * csrc/python is the one place that speaks the CPython and NumPy C APIs: it converts
 * NumPy arrays to the engine's float buffers and back, maps cx_status values to Python
 * exceptions (binding.c's helpers), and releases the GIL around compute. Everything else
 * (ops, models, file formats) is plain C under csrc/. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define PY_ARRAY_UNIQUE_SYMBOL codext_ARRAY_API
#include <numpy/arrayobject.h>

/* The NumPy C API this module was compiled for, reported by build_info(). NumPy >= 1.25
 * headers name it (NPY_FEATURE_VERSION_STRING, e.g. "1.19"); older ones (Debian 12's 1.24)
 * only have the API number, and a module built against them runs on NumPy 1.x only. */
#ifdef NPY_FEATURE_VERSION_STRING
#define CX_NUMPY_TARGET_API NPY_FEATURE_VERSION_STRING
#else
#define CX_NUMPY_STR_(x) #x
#define CX_NUMPY_STR(x) CX_NUMPY_STR_(x)
#define CX_NUMPY_TARGET_API "1.x (C API " CX_NUMPY_STR(NPY_FEATURE_VERSION) ")"
#endif

#include "model_binding.h"
#include "../ops/cuda_loader.h"
#include "../io/safetensors.h"

#include <string.h>

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
        "numpy_target_api", CX_NUMPY_TARGET_API);
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
    PyModuleDef_HEAD_INIT,
    .m_name = "codext._C",
    .m_doc = "codext's native engine.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__C(void) {
    import_array();
    PyObject *module = PyModule_Create(&module_def);
    if (!module)
        return NULL;
    if (PyModule_AddFunctions(module, cx_py_metrics_methods) < 0 ||
        PyModule_AddFunctions(module, cx_py_data_methods) < 0 ||
        PyModule_AddFunctions(module, cx_py_dist_methods) < 0 ||
        PyModule_AddFunctions(module, cx_py_store_methods) < 0 ||
        cx_py_add_backbone_type(module) < 0 || cx_py_add_cod_type(module) < 0 ||
        cx_py_add_trainer_type(module) < 0 || cx_py_add_dist_types(module) < 0 ||
        cx_py_add_store_types(module) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
