/* codext._testing: test access to leaf functions of the engine that codext itself does not
 * call as such (the tests check them against independent implementations):
 *
 *   augment_params(seed, epoch, index, h, w, **ranges) -> dict   one sample's random transform
 *       (csrc/data/augment.c: cx_augment_draw), checked for its distribution and determinism
 *   metrics_edt(mask uint8 [H, W]) -> (dist float64 [H, W], nearest int32 [2, H, W])
 *       the exact Euclidean distance transform of csrc/metrics (the weighted F-measure's),
 *       against scipy.ndimage.distance_transform_edt(mask == 0, return_indices=True)
 *   hmac_sha256(key, data) -> digest   csrc/dist/sha256.c against Python's hmac */
#define PY_SSIZE_T_CLEAN
#define PY_ARRAY_UNIQUE_SYMBOL codext_testing_ARRAY_API /* module.c's table */
#define NO_IMPORT_ARRAY
#include "../python/binding.h"
#include "../data/data.h"
#include "../dist/sha256.h"
#include "../metrics/metrics.h"

/* augment_params(seed, epoch, index, h, w, **ranges) -> dict: one sample's transform (tests) */
static PyObject *py_augment_params(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *keywords[] = {"seed", "epoch", "index", "h", "w", "flip_prob", "scale_min",
                               "scale_max", "rotate_deg", "brightness", "contrast", "saturation",
                               NULL};
    unsigned long long seed, epoch, index;
    int h, w;
    cx_augment_config cfg = cx_augment_defaults();
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "KKKii|$fffffff", keywords, &seed, &epoch,
                                     &index, &h, &w, &cfg.flip_prob, &cfg.scale_min,
                                     &cfg.scale_max, &cfg.rotate_deg, &cfg.brightness,
                                     &cfg.contrast, &cfg.saturation))
        return NULL;
    cx_augment_sample t;
    cx_augment_draw(&cfg, seed, epoch, index, h, w, &t);
    return Py_BuildValue("{s:O,s:d,s:d,s:d,s:d,s:d,s:d,s:d}", "flip", t.flip ? Py_True : Py_False,
                         "scale", (double)t.scale, "angle", (double)t.angle, "offset_x",
                         (double)t.offset_x, "offset_y", (double)t.offset_y, "brightness",
                         (double)t.brightness, "contrast", (double)t.contrast, "saturation",
                         (double)t.saturation);
}

static PyObject *py_metrics_edt(PyObject *self, PyObject *arg) {
    (void)self;
    if (!PyArray_Check(arg) || PyArray_TYPE((PyArrayObject *)arg) != NPY_UINT8 ||
        PyArray_NDIM((PyArrayObject *)arg) != 2 || !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)arg)) {
        PyErr_SetString(PyExc_TypeError, "metrics_edt: mask must be a C-contiguous uint8 array [H, W]");
        return NULL;
    }
    PyArrayObject *mask = (PyArrayObject *)arg;
    npy_intp h = PyArray_DIM(mask, 0), w = PyArray_DIM(mask, 1);
    npy_intp dims3[3] = {2, h, w};
    PyObject *dist = PyArray_SimpleNew(2, PyArray_DIMS(mask), NPY_FLOAT64);
    PyObject *nearest = PyArray_SimpleNew(3, dims3, NPY_INT32);
    if (!dist || !nearest) {
        Py_XDECREF(dist);
        Py_XDECREF(nearest);
        return NULL;
    }
    int32_t *rows = PyArray_DATA((PyArrayObject *)nearest);
    cx_status st;
    Py_INCREF(arg);
    Py_BEGIN_ALLOW_THREADS
    st = cx_metrics_edt(PyArray_DATA(mask), h, w, rows, rows + h * w, PyArray_DATA((PyArrayObject *)dist));
    Py_END_ALLOW_THREADS
    Py_DECREF(arg);
    if (st != CX_OK) {
        Py_DECREF(dist);
        Py_DECREF(nearest);
        return cx_py_error(st);
    }
    return Py_BuildValue("NN", dist, nearest);
}

static PyObject *py_hmac_sha256(PyObject *mod, PyObject *args) {
    Py_buffer key, data;
    if (!PyArg_ParseTuple(args, "y*y*", &key, &data))
        return NULL;
    unsigned char out[CX_SHA256_BYTES];
    cx_hmac_sha256(key.buf, (size_t)key.len, data.buf, (size_t)data.len, NULL, 0, out);
    PyBuffer_Release(&key);
    PyBuffer_Release(&data);
    return PyBytes_FromStringAndSize((const char *)out, CX_SHA256_BYTES);
}

PyMethodDef cx_test_leaf_methods[] = {
    {"augment_params", (PyCFunction)(void (*)(void))py_augment_params, METH_VARARGS | METH_KEYWORDS,
     "augment_params(seed, epoch, index, h, w, **ranges) -> dict: the transform of one sample."},
    {"metrics_edt", py_metrics_edt, METH_O,
     "metrics_edt(mask uint8 [H, W]) -> (dist float64 [H, W], nearest int32 [2, H, W]): for each pixel "
     "the nearest nonzero pixel, as scipy.ndimage.distance_transform_edt(mask == 0, return_indices=True)."},
    {"hmac_sha256", py_hmac_sha256, METH_VARARGS, "hmac_sha256(key, data) -> digest."},
    {NULL, NULL, 0, NULL},
};
