/* CPython binding of the data functions (csrc/data): checks arrays, allocates outputs,
 * releases the GIL around the C calls. No compute here. */
#define PY_SSIZE_T_CLEAN
#include "binding.h"
#include "../data/data.h"

/* New reference to a C-contiguous uint8 view/copy of obj with ndim in [min_ndim,
 * max_ndim]; TypeError for another dtype (no silent casts: a float image in 0..1 would
 * turn black). */
static PyArrayObject *as_u8(PyObject *obj, const char *what, int min_ndim, int max_ndim) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a numpy uint8 array, got %s", what,
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)obj;
    if (PyArray_TYPE(arr) != NPY_UINT8) {
        PyErr_Format(PyExc_TypeError, "%s must have dtype uint8, got %R", what,
                     (PyObject *)PyArray_DESCR(arr));
        return NULL;
    }
    if (PyArray_NDIM(arr) < min_ndim || PyArray_NDIM(arr) > max_ndim) {
        PyErr_Format(PyExc_ValueError, "%s must have %d to %d dimensions, got %d", what, min_ndim,
                     max_ndim, PyArray_NDIM(arr));
        return NULL;
    }
    for (int d = 0; d < PyArray_NDIM(arr); d++)
        if (PyArray_DIM(arr, d) < 1 && !(d == 0 && PyArray_NDIM(arr) == max_ndim)) {
            PyErr_Format(PyExc_ValueError, "%s has an empty dimension %d", what, d);
            return NULL;
        }
    return (PyArrayObject *)PyArray_FROMANY(obj, NPY_UINT8, 0, 0, NPY_ARRAY_IN_ARRAY);
}

/* Checks a caller-provided output array (writable, C-contiguous, exact dtype and shape)
 * and returns a new reference, or allocates one when out is NULL/None. */
static PyArrayObject *output_array(PyObject *out, const char *what, int type, int ndim,
                                   const npy_intp *dims) {
    if (!out || out == Py_None)
        return (PyArrayObject *)PyArray_EMPTY(ndim, (npy_intp *)dims, type, 0);
    if (!PyArray_Check(out)) {
        PyErr_Format(PyExc_TypeError, "%s must be a numpy array", what);
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)out;
    int ok = PyArray_TYPE(arr) == type && PyArray_NDIM(arr) == ndim &&
             PyArray_IS_C_CONTIGUOUS(arr) && PyArray_ISWRITEABLE(arr);
    for (int d = 0; ok && d < ndim; d++)
        ok = PyArray_DIM(arr, d) == dims[d];
    if (!ok) {
        PyObject *want = PyTuple_New(ndim);
        if (!want)
            return NULL;
        for (int d = 0; d < ndim; d++)
            PyTuple_SET_ITEM(want, d, PyLong_FromSsize_t(dims[d]));
        PyObject *got = PyObject_GetAttrString(out, "shape");
        if (got)
            PyErr_Format(PyExc_ValueError,
                         "%s must be a writable C-contiguous %s array of shape %R, got dtype %R "
                         "shape %R%s", what, type == NPY_UINT8 ? "uint8" : "float32", want,
                         (PyObject *)PyArray_DESCR(arr), got,
                         PyArray_ISWRITEABLE(arr) ? "" : " (read-only)");
        Py_XDECREF(got);
        Py_DECREF(want);
        return NULL;
    }
    Py_INCREF(out);
    return arr;
}

static int check_size(int value, const char *what) {
    if (value < 1 || value > 65535) {
        PyErr_Format(PyExc_ValueError, "%s must be in 1..65535, got %d", what, value);
        return -1;
    }
    return 0;
}

/* resize_image(src u8 [H,W,C] or [N,H,W,C], out_h, out_w, out=None) -> u8 [(N,)out_h,out_w,C] */
static PyObject *py_resize_image(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *keywords[] = {"src", "out_h", "out_w", "out", NULL};
    PyObject *src_obj, *out_obj = NULL;
    int out_h, out_w;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Oii|O", keywords, &src_obj, &out_h, &out_w,
                                     &out_obj))
        return NULL;
    if (check_size(out_h, "out_h") || check_size(out_w, "out_w"))
        return NULL;
    PyArrayObject *src = as_u8(src_obj, "image", 3, 4);
    if (!src)
        return NULL;
    int batched = PyArray_NDIM(src) == 4, nd = PyArray_NDIM(src);
    npy_intp n = batched ? PyArray_DIM(src, 0) : 1;
    int in_h = (int)PyArray_DIM(src, nd - 3), in_w = (int)PyArray_DIM(src, nd - 2);
    int channels = (int)PyArray_DIM(src, nd - 1);
    npy_intp dims[4] = {n, out_h, out_w, channels};
    PyArrayObject *out = output_array(out_obj, "out", NPY_UINT8, nd, batched ? dims : dims + 1);
    if (!out) {
        Py_DECREF(src);
        return NULL;
    }
    cx_status st;
    const uint8_t *s = PyArray_DATA(src);
    uint8_t *d = PyArray_DATA(out);
    Py_BEGIN_ALLOW_THREADS
    if (batched)
        st = cx_resize_bilinear_u8_batch(s, n, in_h, in_w, channels, d, out_h, out_w);
    else /* single image: serial, so a decoding thread pool runs many at once */
        st = cx_resize_bilinear_u8(s, in_h, in_w, channels, d, out_h, out_w);
    Py_END_ALLOW_THREADS
    Py_DECREF(src);
    if (st != CX_OK) {
        Py_DECREF(out);
        return cx_py_error(st);
    }
    return (PyObject *)out;
}

/* resize_mask(src u8 [H,W] or [N,H,W], out_h, out_w, out=None) -> u8 0/255 */
static PyObject *py_resize_mask(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *keywords[] = {"src", "out_h", "out_w", "out", NULL};
    PyObject *src_obj, *out_obj = NULL;
    int out_h, out_w;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Oii|O", keywords, &src_obj, &out_h, &out_w,
                                     &out_obj))
        return NULL;
    if (check_size(out_h, "out_h") || check_size(out_w, "out_w"))
        return NULL;
    PyArrayObject *src = as_u8(src_obj, "mask", 2, 3);
    if (!src)
        return NULL;
    int batched = PyArray_NDIM(src) == 3, nd = PyArray_NDIM(src);
    npy_intp n = batched ? PyArray_DIM(src, 0) : 1;
    int in_h = (int)PyArray_DIM(src, nd - 2), in_w = (int)PyArray_DIM(src, nd - 1);
    npy_intp dims[3] = {n, out_h, out_w};
    PyArrayObject *out = output_array(out_obj, "out", NPY_UINT8, nd, batched ? dims : dims + 1);
    if (!out) {
        Py_DECREF(src);
        return NULL;
    }
    cx_status st;
    const uint8_t *s = PyArray_DATA(src);
    uint8_t *d = PyArray_DATA(out);
    Py_BEGIN_ALLOW_THREADS
    if (batched)
        st = cx_resize_mask_u8_batch(s, n, in_h, in_w, d, out_h, out_w);
    else
        st = cx_resize_mask_u8(s, in_h, in_w, d, out_h, out_w);
    Py_END_ALLOW_THREADS
    Py_DECREF(src);
    if (st != CX_OK) {
        Py_DECREF(out);
        return cx_py_error(st);
    }
    return (PyObject *)out;
}

/* mask_binary_levels(masks) -> int64 [N]: cx_mask_binary_level of each mask of a uint8
 * [N, H, W] stack (or [1] for one [H, W] mask): its foreground level v <= 128 when it
 * holds only 0 and v, else 0. One pass, no copy. */
static PyObject *py_mask_binary_levels(PyObject *self, PyObject *arg) {
    (void)self;
    PyArrayObject *src = (PyArrayObject *)arg;
    if (!PyArray_Check(arg) || PyArray_TYPE(src) != NPY_UINT8 ||
        (PyArray_NDIM(src) != 2 && PyArray_NDIM(src) != 3)) {
        PyErr_SetString(PyExc_TypeError, "masks must be a uint8 numpy array [N, H, W] or [H, W]");
        return NULL;
    }
    src = (PyArrayObject *)PyArray_FromAny(arg, PyArray_DescrFromType(NPY_UINT8), 0, 0,
                                           NPY_ARRAY_CARRAY_RO, NULL);
    if (!src)
        return NULL;
    npy_intp n = PyArray_NDIM(src) == 3 ? PyArray_DIM(src, 0) : 1;
    PyArrayObject *out = (PyArrayObject *)PyArray_EMPTY(1, &n, NPY_INT64, 0);
    if (!out) {
        Py_DECREF(src);
        return NULL;
    }
    const uint8_t *data = PyArray_DATA(src);
    int64_t *levels = PyArray_DATA(out);
    int64_t plane = n ? (int64_t)(PyArray_SIZE(src) / n) : 0;
    Py_BEGIN_ALLOW_THREADS
    for (npy_intp i = 0; i < n; i++)
        levels[i] = cx_mask_binary_level(data + i * plane, plane);
    Py_END_ALLOW_THREADS
    Py_DECREF(src);
    return (PyObject *)out;
}

/* mask_from_levels(levels) -> u8 of the same shape: a mask file's levels (any integer or
 * float dtype, as Pillow decodes them) by codext's mask rules (data.h). */
static PyObject *py_mask_from_levels(PyObject *self, PyObject *arg) {
    (void)self;
    if (!PyArray_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "levels must be a numpy array, got %s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    int kind = PyArray_DESCR((PyArrayObject *)arg)->kind;
    int type = PyArray_TYPE((PyArrayObject *)arg);
    int want;
    cx_level_dtype code;
    if (type == NPY_UINT8) {
        want = NPY_UINT8;
        code = CX_LEVEL_U8;
    } else if (kind == 'u' || kind == 'i' || kind == 'b') {
        want = NPY_INT64;
        code = CX_LEVEL_I64;
    } else if (kind == 'f') {
        want = NPY_FLOAT64;
        code = CX_LEVEL_F64;
    } else {
        PyErr_Format(PyExc_TypeError, "levels must hold integers or floats, got dtype kind '%c'", kind);
        return NULL;
    }
    PyArrayObject *src = (PyArrayObject *)PyArray_FromAny(
        arg, PyArray_DescrFromType(want), 0, 0, NPY_ARRAY_CARRAY_RO | NPY_ARRAY_FORCECAST, NULL);
    if (!src)
        return NULL;
    PyArrayObject *out = (PyArrayObject *)PyArray_EMPTY(PyArray_NDIM(src), PyArray_DIMS(src), NPY_UINT8, 0);
    if (!out) {
        Py_DECREF(src);
        return NULL;
    }
    cx_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cx_mask_from_levels(PyArray_DATA(src), code, (int64_t)PyArray_SIZE(src), PyArray_DATA(out));
    Py_END_ALLOW_THREADS
    Py_DECREF(src);
    if (st != CX_OK) {
        Py_DECREF(out);
        return cx_py_error(st);
    }
    return (PyObject *)out;
}

/* resize_float(src f32 [..., H, W], out_h, out_w) -> f32 [..., out_h, out_w] */
static PyObject *py_resize_float(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *src_obj;
    int out_h, out_w;
    if (!PyArg_ParseTuple(args, "Oii", &src_obj, &out_h, &out_w))
        return NULL;
    if (check_size(out_h, "out_h") || check_size(out_w, "out_w"))
        return NULL;
    PyArrayObject *src = cx_py_as_float32(src_obj, "src");
    if (!src)
        return NULL;
    int nd = PyArray_NDIM(src);
    if (nd < 2 || nd > 8 || PyArray_DIM(src, nd - 1) < 1 || PyArray_DIM(src, nd - 2) < 1) {
        PyErr_Format(PyExc_ValueError, "src must have shape [..., H, W] with H, W >= 1 (ndim %d)", nd);
        Py_DECREF(src);
        return NULL;
    }
    npy_intp dims[8];
    int64_t planes = 1;
    for (int d = 0; d < nd - 2; d++) {
        dims[d] = PyArray_DIM(src, d);
        planes *= dims[d];
    }
    dims[nd - 2] = out_h;
    dims[nd - 1] = out_w;
    PyArrayObject *out = (PyArrayObject *)PyArray_EMPTY(nd, dims, NPY_FLOAT32, 0);
    if (!out) {
        Py_DECREF(src);
        return NULL;
    }
    cx_status st;
    int in_h = (int)PyArray_DIM(src, nd - 2), in_w = (int)PyArray_DIM(src, nd - 1);
    Py_BEGIN_ALLOW_THREADS
    st = cx_resize_bilinear_f32(PyArray_DATA(src), planes, in_h, in_w, PyArray_DATA(out), out_h, out_w);
    Py_END_ALLOW_THREADS
    Py_DECREF(src);
    if (st != CX_OK) {
        Py_DECREF(out);
        return cx_py_error(st);
    }
    return (PyObject *)out;
}

/* augment_batch(images, masks, indices, seed, epoch, train, flip_prob=, scale_min=,
 *               scale_max=, rotate_deg=, brightness=, contrast=, saturation=) -> (x, y)
 * masks may be None (then y is None). */
static PyObject *py_augment_batch(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *keywords[] = {"images", "masks", "indices", "seed", "epoch", "train",
                               "flip_prob", "scale_min", "scale_max", "rotate_deg",
                               "brightness", "contrast", "saturation", NULL};
    PyObject *images_obj, *masks_obj, *indices_obj;
    unsigned long long seed = 0, epoch = 0;
    int train = 1;
    cx_augment_config cfg = cx_augment_defaults();
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|KKp$fffffff", keywords, &images_obj,
                                     &masks_obj, &indices_obj, &seed, &epoch, &train,
                                     &cfg.flip_prob, &cfg.scale_min, &cfg.scale_max,
                                     &cfg.rotate_deg, &cfg.brightness, &cfg.contrast,
                                     &cfg.saturation))
        return NULL;
    PyArrayObject *images = NULL, *masks = NULL, *indices = NULL, *x = NULL, *y = NULL;
    PyObject *result = NULL;
    images = as_u8(images_obj, "images", 4, 4);
    if (!images)
        goto done;
    npy_intp n = PyArray_DIM(images, 0), h = PyArray_DIM(images, 1), w = PyArray_DIM(images, 2);
    if (PyArray_DIM(images, 3) != 3) {
        PyErr_Format(PyExc_ValueError, "images must have shape [N, H, W, 3], got last dim %zd",
                     (Py_ssize_t)PyArray_DIM(images, 3));
        goto done;
    }
    if (masks_obj != Py_None) {
        masks = as_u8(masks_obj, "masks", 3, 3);
        if (!masks)
            goto done;
        if (PyArray_DIM(masks, 0) != n || PyArray_DIM(masks, 1) != h || PyArray_DIM(masks, 2) != w) {
            PyErr_Format(PyExc_ValueError, "masks shape [%zd, %zd, %zd] does not match images [%zd, %zd, %zd, 3]",
                         (Py_ssize_t)PyArray_DIM(masks, 0), (Py_ssize_t)PyArray_DIM(masks, 1),
                         (Py_ssize_t)PyArray_DIM(masks, 2), (Py_ssize_t)n, (Py_ssize_t)h, (Py_ssize_t)w);
            goto done;
        }
    }
    indices = (PyArrayObject *)PyArray_FROMANY(indices_obj, NPY_INT64, 1, 1,
                                               NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    if (!indices)
        goto done;
    npy_intp batch = PyArray_DIM(indices, 0);
    npy_intp xdims[4] = {batch, 3, h, w}, ydims[4] = {batch, 1, h, w};
    x = (PyArrayObject *)PyArray_EMPTY(4, xdims, NPY_FLOAT32, 0);
    if (!x)
        goto done;
    if (masks) {
        y = (PyArrayObject *)PyArray_EMPTY(4, ydims, NPY_FLOAT32, 0);
        if (!y)
            goto done;
    }
    cx_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cx_augment_batch(PyArray_DATA(images), masks ? PyArray_DATA(masks) : NULL, n, (int)h, (int)w,
                          PyArray_DATA(indices), batch, seed, epoch, train, &cfg,
                          PyArray_DATA(x), y ? PyArray_DATA(y) : NULL);
    Py_END_ALLOW_THREADS
    if (st != CX_OK) {
        cx_py_error(st);
        goto done;
    }
    result = Py_BuildValue("(OO)", (PyObject *)x, y ? (PyObject *)y : Py_None);
done:
    Py_XDECREF(images);
    Py_XDECREF(masks);
    Py_XDECREF(indices);
    Py_XDECREF(x);
    Py_XDECREF(y);
    return result;
}

/* synthetic(n, size, seed, stream=0, first_index=0, images=None, masks=None)
 *   -> (images u8 [n,size,size,3], masks u8 [n,size,size]) */
static PyObject *py_synthetic(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *keywords[] = {"n", "size", "seed", "stream", "first_index", "images", "masks", NULL};
    long long n, first_index = 0;
    int size;
    unsigned long long seed, stream = 0;
    PyObject *images_obj = NULL, *masks_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "LiK|KLOO", keywords, &n, &size, &seed, &stream,
                                     &first_index, &images_obj, &masks_obj))
        return NULL;
    if (n < 0 || size < 8 || size > 8192) {
        PyErr_Format(PyExc_ValueError, "synthetic: need n >= 0 and 8 <= size <= 8192, got n=%lld size=%d",
                     n, size);
        return NULL;
    }
    npy_intp dims[4] = {(npy_intp)n, size, size, 3};
    PyArrayObject *images = output_array(images_obj, "images", NPY_UINT8, 4, dims);
    if (!images)
        return NULL;
    PyArrayObject *masks = output_array(masks_obj, "masks", NPY_UINT8, 3, dims);
    if (!masks) {
        Py_DECREF(images);
        return NULL;
    }
    cx_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cx_synthetic(n, size, seed, stream, first_index, PyArray_DATA(images), PyArray_DATA(masks));
    Py_END_ALLOW_THREADS
    if (st != CX_OK) {
        Py_DECREF(images);
        Py_DECREF(masks);
        return cx_py_error(st);
    }
    return Py_BuildValue("(NN)", (PyObject *)images, (PyObject *)masks);
}

PyMethodDef cx_py_data_methods[] = {
    {"resize_image", (PyCFunction)(void (*)(void))py_resize_image, METH_VARARGS | METH_KEYWORDS,
     "resize_image(src u8 [H,W,C] | [N,H,W,C], out_h, out_w, out=None): bilinear, align_corners=False."},
    {"mask_binary_levels", py_mask_binary_levels, METH_O,
     "mask_binary_levels(masks) -> int64 [N]: per uint8 mask, the level v <= 128 it holds "
     "besides 0 (a 0/1 mask: 1), else 0."},
    {"mask_from_levels", py_mask_from_levels, METH_O,
     "mask_from_levels(levels) -> u8: a mask file's levels by codext's rules (16-bit and "
     "integer levels above 255: > max/2; else clipped; 0 and one value <= 128: 0/255)."},
    {"resize_mask", (PyCFunction)(void (*)(void))py_resize_mask, METH_VARARGS | METH_KEYWORDS,
     "resize_mask(src u8 [H,W] | [N,H,W], out_h, out_w, out=None): nearest, then >128 -> 255."},
    {"resize_float", py_resize_float, METH_VARARGS,
     "resize_float(src f32 [..., H, W], out_h, out_w): bilinear, align_corners=False."},
    {"augment_batch", (PyCFunction)(void (*)(void))py_augment_batch, METH_VARARGS | METH_KEYWORDS,
     "augment_batch(images, masks, indices, seed=0, epoch=0, train=True, **ranges) -> (x, y)."},
    {"synthetic", (PyCFunction)(void (*)(void))py_synthetic, METH_VARARGS | METH_KEYWORDS,
     "synthetic(n, size, seed, stream=0, first_index=0, images=None, masks=None) -> (images, masks)."},
    {NULL, NULL, 0, NULL},
};
