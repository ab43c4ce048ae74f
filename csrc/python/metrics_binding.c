/* CPython binding of the metrics functions (csrc/metrics/metrics.h).
 *
 * metrics_evaluate(preds, gts, per_image) -> dict
 *   preds: list of 2-D C-contiguous arrays, uint8 / float32 / float64
 *   gts:   list of 2-D C-contiguous uint8 arrays of the same shapes
 * metrics_aggregate(per_image) -> dict of the dataset results
 *
 * codext/metrics.py validates and converts user input; the checks here only keep the C
 * side safe. The arrays are referenced for the whole call, and the GIL is released
 * while the metrics run. */
#include "binding.h"
#include "../metrics/metrics.h"

#include <string.h>

static int set_float(PyObject *dict, const char *key, double value) {
    PyObject *obj = PyFloat_FromDouble(value);
    if (!obj)
        return -1;
    int rc = PyDict_SetItemString(dict, key, obj);
    Py_DECREF(obj);
    return rc;
}

/* dict[key] = float64 array of dims ([L] or [R, L]); row r is read from src + r * stride. */
static int set_array(PyObject *dict, const char *key, int ndim, npy_intp *dims, const double *src,
                     size_t stride) {
    PyObject *arr = PyArray_SimpleNew(ndim, dims, NPY_FLOAT64);
    if (!arr)
        return -1;
    double *dst = PyArray_DATA((PyArrayObject *)arr);
    const npy_intp rows = ndim == 2 ? dims[0] : 1, len = dims[ndim - 1];
    for (npy_intp r = 0; r < rows; r++)
        memcpy(dst + r * len, src + r * stride, (size_t)len * sizeof(double));
    int rc = PyDict_SetItemString(dict, key, arr);
    Py_DECREF(arr);
    return rc;
}

static PyObject *dataset_dict(const cx_dataset_metrics *d) {
    PyObject *out = PyDict_New();
    if (!out)
        return NULL;
    npy_intp levels = CX_METRIC_LEVELS;
    if (set_float(out, "sm", d->smeasure) < 0 || set_float(out, "wfm", d->wfmeasure) < 0 ||
        set_float(out, "mae", d->mae) < 0 || set_float(out, "adp_em", d->adaptive_emeasure) < 0 ||
        set_float(out, "mean_em", d->mean_emeasure) < 0 || set_float(out, "max_em", d->max_emeasure) < 0 ||
        set_float(out, "adp_fm", d->adaptive_fmeasure) < 0 || set_float(out, "mean_fm", d->mean_fmeasure) < 0 ||
        set_float(out, "max_fm", d->max_fmeasure) < 0 || set_float(out, "iou", d->iou) < 0 ||
        set_float(out, "dice", d->dice) < 0 ||
        set_array(out, "em_curve", 1, &levels, d->emeasure_curve, 0) < 0 ||
        set_array(out, "fm_curve", 1, &levels, d->fmeasure_curve, 0) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

static PyObject *per_image_dict(const cx_image_metrics *r, npy_intp n) {
    PyObject *out = PyDict_New();
    if (!out)
        return NULL;
    const size_t stride = sizeof(cx_image_metrics) / sizeof(double);
    const struct { const char *key; const double *first; } scalars[] = {
        {"sm", &r->smeasure}, {"wfm", &r->wfmeasure}, {"mae", &r->mae},
        {"adp_em", &r->adaptive_emeasure}, {"adp_fm", &r->adaptive_fmeasure},
        {"iou", &r->iou}, {"dice", &r->dice},
    };
    npy_intp curve_dims[2] = {n, CX_METRIC_LEVELS};
    for (size_t k = 0; k < sizeof scalars / sizeof scalars[0]; k++) {
        PyObject *arr = PyArray_SimpleNew(1, &n, NPY_FLOAT64);
        if (!arr)
            goto fail;
        double *dst = PyArray_DATA((PyArrayObject *)arr);
        for (npy_intp i = 0; i < n; i++)
            dst[i] = scalars[k].first[i * stride];
        int rc = PyDict_SetItemString(out, scalars[k].key, arr);
        Py_DECREF(arr);
        if (rc < 0)
            goto fail;
    }
    if (set_array(out, "em_curve", 2, curve_dims, r->emeasure_curve, stride) < 0 ||
        set_array(out, "fm_curve", 2, curve_dims, r->fmeasure_curve, stride) < 0)
        goto fail;
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* Borrowed check: a 2-D, C-contiguous, aligned, native-order array of one of `kinds`. */
static int check_image_array(PyObject *obj, const char *what, Py_ssize_t index, int allow_float) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s[%zd] must be a numpy array, got %s", what, index, Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyArrayObject *arr = (PyArrayObject *)obj;
    int type = PyArray_TYPE(arr);
    int ok_type = type == NPY_UINT8 || (allow_float && (type == NPY_FLOAT32 || type == NPY_FLOAT64));
    if (!ok_type) {
        PyErr_Format(PyExc_TypeError, "%s[%zd] has dtype %R; expected %s", what, index,
                     (PyObject *)PyArray_DESCR(arr), allow_float ? "uint8, float32 or float64" : "uint8");
        return -1;
    }
    if (PyArray_NDIM(arr) != 2) {
        PyErr_Format(PyExc_ValueError, "%s[%zd] must be 2-D, got %d dims", what, index, PyArray_NDIM(arr));
        return -1;
    }
    if (!PyArray_IS_C_CONTIGUOUS(arr) || !PyArray_ISALIGNED(arr) || !PyArray_ISNOTSWAPPED(arr)) {
        PyErr_Format(PyExc_ValueError, "%s[%zd] must be C-contiguous, aligned and native byte order", what, index);
        return -1;
    }
    return 0;
}

/* metrics_evaluate(preds, gts, per_image=False, profile=False): with profile, runs
 * cx_metrics_profile instead and returns the stage seconds (bench/metrics.py). */
static PyObject *py_metrics_evaluate(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *preds_obj, *gts_obj;
    int per_image = 0, profile = 0;
    if (!PyArg_ParseTuple(args, "OO|pp", &preds_obj, &gts_obj, &per_image, &profile))
        return NULL;
    PyObject *preds = PySequence_Fast(preds_obj, "preds must be a sequence of arrays");
    if (!preds)
        return NULL;
    PyObject *gts = PySequence_Fast(gts_obj, "gts must be a sequence of arrays");
    if (!gts) {
        Py_DECREF(preds);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(preds);
    PyObject **held = PyMem_Calloc(2 * (size_t)n + 1, sizeof *held);
    cx_metric_image *images = PyMem_Calloc((size_t)n + 1, sizeof *images);
    cx_image_metrics *results = PyMem_Calloc((size_t)n + 1, sizeof *results);
    cx_dataset_metrics dataset;
    if (!held || !images || !results) {
        PyErr_NoMemory();
        goto done;
    }
    if (PySequence_Fast_GET_SIZE(gts) != n) {
        PyErr_Format(PyExc_ValueError, "got %zd predictions but %zd ground truths", n, PySequence_Fast_GET_SIZE(gts));
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PySequence_Fast_GET_ITEM(preds, i), *g = PySequence_Fast_GET_ITEM(gts, i);
        if (check_image_array(p, "preds", i, 1) < 0 || check_image_array(g, "gts", i, 0) < 0)
            goto done;
        Py_INCREF(p);
        Py_INCREF(g);
        held[2 * i] = p;
        held[2 * i + 1] = g;
        PyArrayObject *pa = (PyArrayObject *)p, *ga = (PyArrayObject *)g;
        if (PyArray_DIM(pa, 0) != PyArray_DIM(ga, 0) || PyArray_DIM(pa, 1) != PyArray_DIM(ga, 1)) {
            PyErr_Format(PyExc_ValueError, "image %zd: prediction shape (%zd, %zd) differs from GT shape (%zd, %zd)",
                         i, (Py_ssize_t)PyArray_DIM(pa, 0), (Py_ssize_t)PyArray_DIM(pa, 1),
                         (Py_ssize_t)PyArray_DIM(ga, 0), (Py_ssize_t)PyArray_DIM(ga, 1));
            goto done;
        }
        int type = PyArray_TYPE(pa);
        images[i].pred = PyArray_DATA(pa);
        images[i].gt = PyArray_DATA(ga);
        images[i].pred_dtype = type == NPY_UINT8 ? CX_PRED_U8 : type == NPY_FLOAT32 ? CX_PRED_F32 : CX_PRED_F64;
        images[i].height = PyArray_DIM(pa, 0);
        images[i].width = PyArray_DIM(pa, 1);
    }
    cx_status st;
    if (profile) {
        double seconds[CX_METRIC_PROFILE_STAGES];
        Py_BEGIN_ALLOW_THREADS
        st = cx_metrics_profile(images, n, seconds);
        Py_END_ALLOW_THREADS
        if (st != CX_OK)
            cx_py_error(st);
        else
            result = Py_BuildValue("{s:d,s:d,s:d,s:d}", "prepare", seconds[0], "emeasure_fmeasure_mae_iou_dice",
                                   seconds[1], "smeasure", seconds[2], "wfmeasure", seconds[3]);
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    st = cx_metrics_evaluate(images, n, results, &dataset);
    Py_END_ALLOW_THREADS
    if (st != CX_OK) {
        cx_py_error(st);
        goto done;
    }
    result = dataset_dict(&dataset);
    if (result && per_image) {
        PyObject *images_dict = per_image_dict(results, n);
        if (!images_dict || PyDict_SetItemString(result, "per_image", images_dict) < 0)
            Py_CLEAR(result);
        Py_XDECREF(images_dict);
    }
done:
    if (held)
        for (Py_ssize_t i = 0; i < 2 * n; i++)
            Py_XDECREF(held[i]);
    PyMem_Free(held);
    PyMem_Free(images);
    PyMem_Free(results);
    Py_DECREF(preds);
    Py_DECREF(gts);
    return result;
}

/* metrics_aggregate(per_image) -> dict: the dataset results of per-image results (the
 * "per_image" dict of metrics_evaluate, or its arrays concatenated over several calls). */
static PyObject *py_metrics_aggregate(PyObject *self, PyObject *per_image) {
    (void)self;
    if (!PyDict_Check(per_image)) {
        PyErr_Format(PyExc_TypeError, "per_image must be a dict, got %s", Py_TYPE(per_image)->tp_name);
        return NULL;
    }
    static const char *scalar_keys[] = {"sm", "wfm", "mae", "adp_em", "adp_fm", "iou", "dice"};
    static const char *curve_keys[] = {"em_curve", "fm_curve"};
    enum { N_SCALARS = 7, N_CURVES = 2 };
    PyArrayObject *scalars[N_SCALARS] = {0}, *curves[N_CURVES] = {0};
    cx_image_metrics *results = NULL;
    PyObject *out = NULL;
    npy_intp n = -1;
    for (int k = 0; k < N_SCALARS + N_CURVES; k++) {
        const char *key = k < N_SCALARS ? scalar_keys[k] : curve_keys[k - N_SCALARS];
        PyObject *item = PyDict_GetItemString(per_image, key);
        if (!item) {
            PyErr_Format(PyExc_KeyError, "per_image has no '%s'", key);
            goto done;
        }
        int ndim = k < N_SCALARS ? 1 : 2;
        PyArrayObject *arr = (PyArrayObject *)PyArray_FromAny(
            item, PyArray_DescrFromType(NPY_FLOAT64), ndim, ndim, NPY_ARRAY_CARRAY_RO, NULL);
        if (!arr)
            goto done;
        if (k < N_SCALARS)
            scalars[k] = arr;
        else
            curves[k - N_SCALARS] = arr;
        if (n < 0)
            n = PyArray_DIM(arr, 0);
        if (PyArray_DIM(arr, 0) != n || (ndim == 2 && PyArray_DIM(arr, 1) != CX_METRIC_LEVELS)) {
            PyErr_Format(PyExc_ValueError, "per_image['%s'] has %zd rows of %zd values; expected %zd "
                         "rows of %d", key, (Py_ssize_t)PyArray_DIM(arr, 0),
                         ndim == 2 ? (Py_ssize_t)PyArray_DIM(arr, 1) : (Py_ssize_t)1, (Py_ssize_t)n,
                         ndim == 2 ? CX_METRIC_LEVELS : 1);
            goto done;
        }
    }
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "per_image holds no images");
        goto done;
    }
    results = PyMem_Malloc((size_t)n * sizeof *results);
    if (!results) {
        PyErr_NoMemory();
        goto done;
    }
    for (npy_intp i = 0; i < n; i++) {
        double *values[N_SCALARS] = {&results[i].smeasure, &results[i].wfmeasure, &results[i].mae,
                                     &results[i].adaptive_emeasure, &results[i].adaptive_fmeasure,
                                     &results[i].iou, &results[i].dice};
        for (int k = 0; k < N_SCALARS; k++)
            *values[k] = ((const double *)PyArray_DATA(scalars[k]))[i];
        memcpy(results[i].emeasure_curve, (const double *)PyArray_DATA(curves[0]) + i * CX_METRIC_LEVELS,
               sizeof results[i].emeasure_curve);
        memcpy(results[i].fmeasure_curve, (const double *)PyArray_DATA(curves[1]) + i * CX_METRIC_LEVELS,
               sizeof results[i].fmeasure_curve);
    }
    cx_dataset_metrics dataset;
    cx_status st = cx_metrics_aggregate(results, n, &dataset);
    if (st != CX_OK)
        cx_py_error(st);
    else
        out = dataset_dict(&dataset);
done:
    for (int k = 0; k < N_SCALARS; k++)
        Py_XDECREF(scalars[k]);
    for (int k = 0; k < N_CURVES; k++)
        Py_XDECREF(curves[k]);
    PyMem_Free(results);
    return out;
}

PyMethodDef cx_py_metrics_methods[] = {
    {"metrics_evaluate", py_metrics_evaluate, METH_VARARGS,
     "metrics_evaluate(preds, gts, per_image=False, profile=False) -> dict (see codext.metrics.evaluate)."},
    {"metrics_aggregate", py_metrics_aggregate, METH_O,
     "metrics_aggregate(per_image dict) -> dict: the dataset results of per-image results, as "
     "metrics_evaluate sums them (per_image arrays may be concatenated over several calls)."},
    {NULL, NULL, 0, NULL},
};
