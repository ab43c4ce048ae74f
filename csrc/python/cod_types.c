/* _C.CODModel: the COD model (csrc/model/cod.h) for codext.Model. */
#include "model_binding.h"
#include "../model/cod.h"
#include "../ops/cuda_loader.h"
#include "../train/predict.h"

#include <string.h>

/* backend "cuda": the model owns a CUDA backend of its own (device `device`; deterministic
 * 1 (the default): only deterministic cuDNN algorithms, else our direct convolutions; 0:
 * cuDNN's fastest; no TF32) and its parameters and gradients are device memory: params() and grads() return
 * host copies, never views, and upload_params() writes them. */
typedef struct {
    PyObject_HEAD
    cx_cod_model *model;
    cx_backend *cuda; /* owned; NULL on the CPU backend */
    int precision;    /* cx_precision of `cuda` (CX_PRECISION_FP32 on the CPU) */
    int deterministic; /* what `cuda` was made with (1 on the CPU: every op is) */
} CODModelObject;

static void release(CODModelObject *self) {
    cx_cod_free(self->model); /* frees device buffers through its backend: first */
    self->model = NULL;
    cx_cuda_backend_destroy(self->cuda);
    self->cuda = NULL;
}

static int cod_init(CODModelObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"backbone", "decoder_dim", "num_experts", "moe_top_k", "seed",
                               "ds_weight", "balance_weight", "backend", "device",
                               "deterministic", NULL};
    const char *backbone, *backend = "cpu";
    int decoder_dim = 64, num_experts = 7, top_k = 0, device = 0, deterministic = 1;
    unsigned long long seed = 0;
    double ds_weight = 0.5, balance_weight = 0.01;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|iiiKdd$sip", keywords, &backbone,
                                     &decoder_dim, &num_experts, &top_k, &seed, &ds_weight,
                                     &balance_weight, &backend, &device, &deterministic))
        return -1;
    int cuda = strcmp(backend, "cuda") == 0;
    if (!cuda && strcmp(backend, "cpu") != 0) {
        PyErr_Format(PyExc_ValueError, "backend must be 'cpu' or 'cuda', got '%s'", backend);
        return -1;
    }
    cx_cod_config cfg = {.decoder_dim = decoder_dim, .num_experts = num_experts,
                         .top_k = top_k, .ds_weight = (float)ds_weight,
                         .balance_weight = (float)balance_weight};
    if (strlen(backbone) >= sizeof cfg.backbone) {
        PyErr_Format(PyExc_ValueError, "unknown backbone '%s'", backbone);
        return -1;
    }
    strcpy(cfg.backbone, backbone);
    release(self);
    self->precision = CX_PRECISION_FP32;
    self->deterministic = cuda ? deterministic : 1;
    cx_status st = CX_OK;
    cx_backend *be = cx_backend_cpu();
    Py_BEGIN_ALLOW_THREADS
    if (cuda) {
        st = cx_cuda_backend_create(device, deterministic, 0, &self->cuda);
        be = self->cuda;
    }
    if (st == CX_OK)
        st = cx_cod_create(&cfg, seed, be, &self->model);
    Py_END_ALLOW_THREADS
    if (st != CX_OK) {
        release(self);
        cx_py_error(st);
        return -1;
    }
    return 0;
}

static void cod_dealloc(CODModelObject *self) {
    release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A new float32 array of `shape` downloaded from backend memory; the backend's sync()
 * is checked before the array is handed out (NULL with the error set otherwise). */
static PyObject *download(cx_cod_model *m, const float *src, int ndim, const npy_intp *shape) {
    PyObject *arr = PyArray_EMPTY(ndim, (npy_intp *)shape, NPY_FLOAT32, 0);
    if (arr && src) {
        m->be->download(m->be, PyArray_DATA((PyArrayObject *)arr), src,
                        (size_t)PyArray_SIZE((PyArrayObject *)arr));
        cx_status st = m->be->sync(m->be);
        if (st != CX_OK) {
            Py_DECREF(arr);
            return cx_py_error(st);
        }
    }
    return arr;
}

/* The parameter or gradient buffer: a view on the CPU, a host copy of device memory. */
static PyObject *buffer(CODModelObject *self, float *data) {
    cx_cod_model *m = self->model;
    if (!m) {
        PyErr_SetString(PyExc_RuntimeError, "CODModel is not initialised");
        return NULL;
    }
    if (!self->cuda)
        return cx_py_view((PyObject *)self, data, m->table.total, NPY_FLOAT32);
    npy_intp n = (npy_intp)m->table.total;
    return download(m, data, 1, &n);
}

static PyObject *cod_params(CODModelObject *self, PyObject *unused) {
    return buffer(self, self->model ? self->model->params : NULL);
}

static PyObject *cod_grads(CODModelObject *self, PyObject *unused) {
    return buffer(self, self->model ? self->model->grads : NULL);
}

/* upload_params(values float32 [total]): writes the whole parameter buffer (the only way
 * to change a CUDA model's weights from Python; on the CPU the same as params()[:] = v). */
static PyObject *cod_upload_params(CODModelObject *self, PyObject *arg) {
    cx_cod_model *m = self->model;
    if (!m) {
        PyErr_SetString(PyExc_RuntimeError, "CODModel is not initialised");
        return NULL;
    }
    PyArrayObject *v = cx_py_as_float32(arg, "values");
    if (!v)
        return NULL;
    if (PyArray_NDIM(v) != 1 || (size_t)PyArray_DIM(v, 0) != m->table.total) {
        PyErr_Format(PyExc_ValueError, "upload_params needs a float32 array of shape (%zu,), "
                     "got rank %d", m->table.total, PyArray_NDIM(v));
        Py_DECREF(v);
        return NULL;
    }
    cx_status st;
    Py_BEGIN_ALLOW_THREADS
    m->be->upload(m->be, m->params, PyArray_DATA(v), m->table.total);
    st = m->be->sync(m->be);
    Py_END_ALLOW_THREADS
    Py_DECREF(v);
    if (st != CX_OK)
        return cx_py_error(st);
    Py_RETURN_NONE;
}

static PyObject *cod_backend(CODModelObject *self, PyObject *unused) {
    return PyUnicode_FromString(self->cuda ? "cuda" : "cpu");
}

static PyObject *cod_deterministic(CODModelObject *self, PyObject *unused) {
    return PyBool_FromLong(self->deterministic);
}

static PyObject *cod_param_table(CODModelObject *self, PyObject *unused) {
    return cx_py_param_table(&self->model->table);
}

static PyObject *cod_config(CODModelObject *self, PyObject *unused) {
    const cx_cod_config *c = &self->model->cfg;
    return Py_BuildValue("{s:s, s:i, s:i, s:i, s:d, s:d, s:n}", "backbone", c->backbone,
                         "decoder_dim", c->decoder_dim, "num_experts", c->num_experts,
                         "moe_top_k", c->top_k, "ds_weight", (double)c->ds_weight,
                         "balance_weight", (double)c->balance_weight, "backbone_floats",
                         (Py_ssize_t)self->model->backbone_floats);
}

/* The forward modes of cod.h by name; a bool is "train" (True) or "predict" (False). */
static const char *const mode_names[] = {"predict", "train", "train_head", "train_checkpoint"};

/* 0 and *mode set, or -1 with an exception. */
static int parse_mode(PyObject *obj, int *mode) {
    if (!obj || PyBool_Check(obj)) {
        *mode = !obj || obj == Py_True ? CX_COD_TRAIN : CX_COD_PREDICT;
        return 0;
    }
    const char *name = PyUnicode_Check(obj) ? PyUnicode_AsUTF8(obj) : NULL;
    for (int i = 0; name && i < (int)(sizeof mode_names / sizeof *mode_names); i++)
        if (strcmp(name, mode_names[i]) == 0) {
            *mode = i; /* the names are in the enum's order */
            return 0;
        }
    if (!PyErr_Occurred())
        PyErr_Format(PyExc_ValueError, "mode must be 'predict', 'train', 'train_head' or "
                     "'train_checkpoint' (or a bool: train), got %R", obj);
    return -1;
}

/* forward(x [B,3,H,W] float32, mode=True) -> [out_0..out_3] (training modes) or [out_0] */
static PyObject *cod_forward(CODModelObject *self, PyObject *args) {
    PyObject *obj, *mode_obj = NULL;
    int mode;
    if (!PyArg_ParseTuple(args, "O|O", &obj, &mode_obj) || parse_mode(mode_obj, &mode) < 0)
        return NULL;
    int train = mode != CX_COD_PREDICT;
    PyArrayObject *x = cx_py_as_float32(obj, "x");
    if (!x)
        return NULL;
    if (PyArray_NDIM(x) != 4) {
        PyErr_Format(PyExc_ValueError, "x must have rank 4 [B, 3, H, W], got %d", PyArray_NDIM(x));
        Py_DECREF(x);
        return NULL;
    }
    cx_cod_model *m = self->model;
    int B = (int)PyArray_DIM(x, 0), C = (int)PyArray_DIM(x, 1);
    int H = (int)PyArray_DIM(x, 2), W = (int)PyArray_DIM(x, 3);
    cx_status st = cx_edgenext_check_input(&m->backbone, B, C, H, W);
    if (st == CX_OK) {
        Py_BEGIN_ALLOW_THREADS
        st = cx_cod_forward(m, PyArray_DATA(x), B, H, W, mode);
        Py_END_ALLOW_THREADS
    }
    Py_DECREF(x);
    if (st != CX_OK)
        return cx_py_error(st);
    int n_out = train ? 4 : 1;
    PyObject *out = PyList_New(n_out);
    if (!out)
        return NULL;
    npy_intp shape[4] = {B, 1, H, W};
    for (int k = 0; k < n_out; k++) {
        PyObject *arr = download(m, m->outputs[k], 4, shape);
        if (!arr) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, k, arr);
    }
    return out;
}

static PyObject *per_image(const double *values, int B) {
    npy_intp dims[1] = {B};
    PyObject *arr = PyArray_EMPTY(1, dims, NPY_FLOAT64, 0);
    if (arr)
        memcpy(PyArray_DATA((PyArrayObject *)arr), values, (size_t)B * sizeof(double));
    return arr;
}

static int set_item(PyObject *dict, const char *key, PyObject *value) {
    if (!value)
        return -1;
    int rc = PyDict_SetItemString(dict, key, value);
    Py_DECREF(value);
    return rc;
}

/* loss(y [B,1,H,W] float32) -> dict of loss parts (after a training forward) */
static PyObject *cod_loss(CODModelObject *self, PyObject *arg) {
    cx_cod_model *m = self->model;
    if (!m->have_forward || !cx_cod_mode_trains(m->mode)) {
        PyErr_SetString(PyExc_RuntimeError, "loss() needs a training forward() first");
        return NULL;
    }
    PyArrayObject *y = cx_py_as_float32(arg, "y");
    if (!y)
        return NULL;
    npy_intp want[4] = {m->batch, 1, m->height, m->width};
    int ok = PyArray_NDIM(y) == 4;
    for (int d = 0; ok && d < 4; d++)
        ok = PyArray_DIM(y, d) == want[d];
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "y must have shape (%zd, 1, %zd, %zd) like the forward's "
                     "outputs", want[0], want[2], want[3]);
        Py_DECREF(y);
        return NULL;
    }
    cx_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cx_cod_loss(m, PyArray_DATA(y), NULL);
    Py_END_ALLOW_THREADS
    Py_DECREF(y);
    if (st != CX_OK)
        return cx_py_error(st);
    const cx_cod_loss_parts *p = &m->parts;
    PyObject *dict = PyDict_New();
    if (!dict)
        return NULL;
    int bad = set_item(dict, "total", PyFloat_FromDouble(p->total));
    for (int k = 0; k < 4 && !bad; k++) {
        char key[16];
        snprintf(key, sizeof key, "loss%d", k);
        bad |= set_item(dict, key, PyFloat_FromDouble(p->loss[k]));
        snprintf(key, sizeof key, "wbce%d", k);
        bad |= set_item(dict, key, per_image(p->wbce[k], m->batch));
        snprintf(key, sizeof key, "wiou%d", k);
        bad |= set_item(dict, key, per_image(p->wiou[k], m->batch));
    }
    if (!bad && m->cfg.top_k > 0)
        bad |= set_item(dict, "balance", PyFloat_FromDouble(p->balance));
    if (bad) {
        Py_DECREF(dict);
        return NULL;
    }
    return dict;
}

static PyObject *cod_backward(CODModelObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"loss_scale", "train_backbone", NULL};
    double scale = 1.0;
    int train_backbone = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|dp", keywords, &scale, &train_backbone))
        return NULL;
    cx_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cx_cod_backward(self->model, (float)scale, train_backbone);
    Py_END_ALLOW_THREADS
    if (st != CX_OK)
        return cx_py_error(st);
    Py_RETURN_NONE;
}

static PyObject *cod_zero_grads(CODModelObject *self, PyObject *unused) {
    cx_cod_zero_grads(self->model);
    Py_RETURN_NONE;
}

static PyObject *cod_probabilities(CODModelObject *self, PyObject *unused) {
    cx_cod_model *m = self->model;
    if (!m->have_forward) {
        PyErr_SetString(PyExc_RuntimeError, "probabilities() needs a forward() first");
        return NULL;
    }
    npy_intp shape[4] = {m->batch, 1, m->height, m->width};
    PyObject *arr = PyArray_EMPTY(4, shape, NPY_FLOAT32, 0);
    if (!arr)
        return NULL;
    cx_status st;
    float *data = PyArray_DATA((PyArrayObject *)arr);
    Py_BEGIN_ALLOW_THREADS
    st = cx_cod_probabilities(m, data);
    Py_END_ALLOW_THREADS
    if (st != CX_OK) {
        Py_DECREF(arr);
        return cx_py_error(st);
    }
    return arr;
}

/* routing() -> per scale {probs [B,E], weights [B,E], chosen [B,k], balance} */
static PyObject *cod_routing(CODModelObject *self, PyObject *unused) {
    cx_cod_model *m = self->model;
    if (!m->have_forward) {
        PyErr_SetString(PyExc_RuntimeError, "routing() needs a forward() first");
        return NULL;
    }
    int B = m->batch, E = m->cfg.num_experts, k = m->cfg.top_k;
    PyObject *list = PyList_New(4);
    if (!list)
        return NULL;
    for (int i = 0; i < 4; i++) {
        const cx_cod_neck *neck = &m->neck[i];
        PyObject *dict = PyDict_New();
        PyList_SET_ITEM(list, i, dict);
        if (!dict)
            goto fail;
        npy_intp shape[2] = {B, E};
        if (set_item(dict, "probs", download(m, neck->probs, 2, shape)) < 0)
            goto fail;
        if (k == 0)
            continue;
        PyObject *weights = PyArray_EMPTY(2, shape, NPY_FLOAT64, 0);
        npy_intp chosen_shape[2] = {B, k};
        PyObject *chosen = PyArray_EMPTY(2, chosen_shape, NPY_INT64, 0);
        if (weights)
            memcpy(PyArray_DATA((PyArrayObject *)weights), neck->weights_host,
                   (size_t)B * E * sizeof(double));
        if (chosen) {
            int64_t *c = PyArray_DATA((PyArrayObject *)chosen);
            for (int j = 0; j < B * k; j++)
                c[j] = neck->chosen[j];
        }
        if (set_item(dict, "weights", weights) < 0 || set_item(dict, "chosen", chosen) < 0 ||
            set_item(dict, "balance", PyFloat_FromDouble(neck->balance)) < 0) {
            Py_XDECREF(chosen);
            goto fail;
        }
    }
    return list;
fail:
    Py_DECREF(list);
    return NULL;
}

/* intermediates() -> {feat{i}, proj{i}, neck{i}, dec{i}, logit{i}} of the last forward */
static PyObject *cod_intermediates(CODModelObject *self, PyObject *unused) {
    cx_cod_model *m = self->model;
    if (!m->have_forward) {
        PyErr_SetString(PyExc_RuntimeError, "intermediates() needs a forward() first");
        return NULL;
    }
    PyObject *dict = PyDict_New();
    if (!dict)
        return NULL;
    int B = m->batch, D = m->cfg.decoder_dim;
    for (int i = 0; i < 4; i++) {
        npy_intp h = cx_edgenext_stage_h(&m->backbone, i), w = cx_edgenext_stage_w(&m->backbone, i);
        npy_intp feat[4] = {B, m->backbone.cfg.dims[i], h, w}, map[4] = {B, D, h, w};
        npy_intp logit[4] = {B, 1, h, w};
        char key[24];
        int bad = 0;
        snprintf(key, sizeof key, "feat%d", i);
        bad |= set_item(dict, key, download(m, m->backbone.features[i], 4, feat));
        snprintf(key, sizeof key, "proj%d", i);
        bad |= set_item(dict, key, download(m, m->neck[i].z, 4, map));
        snprintf(key, sizeof key, "neck%d", i);
        bad |= set_item(dict, key, download(m, m->neck[i].out, 4, map));
        snprintf(key, sizeof key, "dec%d", i);
        bad |= set_item(dict, key, download(m, m->decoder.d[i], 4, map));
        snprintf(key, sizeof key, "logit%d", i);
        bad |= set_item(dict, key, download(m, m->decoder.logits[i], 4, logit));
        if (bad) {
            Py_DECREF(dict);
            return NULL;
        }
    }
    return dict;
}

/* predict_batch(images, size, out_sizes) -> [float32 [h_b, w_b]]: images a list of
 * C-contiguous uint8 [H, W, 3] (codext.Model.predict checks them), size the model's input
 * side, out_sizes a list of (h, w). One C call for the batch (train/predict.h). */
static PyObject *cod_predict_batch(CODModelObject *self, PyObject *args) {
    PyObject *images_obj, *sizes_obj;
    int size;
    if (!PyArg_ParseTuple(args, "OiO", &images_obj, &size, &sizes_obj))
        return NULL;
    PyObject *images = PySequence_Fast(images_obj, "images must be a list of uint8 [H, W, 3] arrays");
    if (!images)
        return NULL;
    PyObject *sizes = PySequence_Fast(sizes_obj, "out_sizes must be a list of (h, w)");
    if (!sizes) {
        Py_DECREF(images);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(images);
    PyObject *out = NULL, *result = NULL;
    const uint8_t **data = PyMem_Calloc((size_t)n + 1, sizeof *data);
    float **probs = PyMem_Calloc((size_t)n + 1, sizeof *probs);
    int *dims = PyMem_Calloc(4 * (size_t)n + 1, sizeof *dims);
    if (!data || !probs || !dims) {
        PyErr_NoMemory();
        goto done;
    }
    int *heights = dims, *widths = dims + n, *out_heights = dims + 2 * n, *out_widths = dims + 3 * n;
    if (n < 1 || PySequence_Fast_GET_SIZE(sizes) != n) {
        PyErr_Format(PyExc_ValueError, "predict_batch: %zd images and %zd output sizes", n,
                     PySequence_Fast_GET_SIZE(sizes));
        goto done;
    }
    out = PyList_New(n);
    if (!out)
        goto done;
    for (Py_ssize_t b = 0; b < n; b++) {
        PyObject *img = PySequence_Fast_GET_ITEM(images, b);
        if (!PyArray_Check(img) || PyArray_TYPE((PyArrayObject *)img) != NPY_UINT8 ||
            PyArray_NDIM((PyArrayObject *)img) != 3 || PyArray_DIM((PyArrayObject *)img, 2) != 3 ||
            !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)img)) {
            PyErr_Format(PyExc_TypeError, "predict_batch: image %zd must be a C-contiguous uint8 "
                         "[H, W, 3] array", b);
            goto done;
        }
        PyArrayObject *arr = (PyArrayObject *)img;
        if (PyArray_DIM(arr, 0) < 1 || PyArray_DIM(arr, 1) < 1 || PyArray_DIM(arr, 0) > INT32_MAX ||
            PyArray_DIM(arr, 1) > INT32_MAX) {
            PyErr_Format(PyExc_ValueError, "predict_batch: image %zd has shape (%zd, %zd, 3)", b,
                         (Py_ssize_t)PyArray_DIM(arr, 0), (Py_ssize_t)PyArray_DIM(arr, 1));
            goto done;
        }
        data[b] = PyArray_DATA(arr);
        heights[b] = (int)PyArray_DIM(arr, 0);
        widths[b] = (int)PyArray_DIM(arr, 1);
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(sizes, b), "ii;out_sizes entries are (h, w)",
                              &out_heights[b], &out_widths[b]))
            goto done;
        if (out_heights[b] < 1 || out_widths[b] < 1) {
            PyErr_Format(PyExc_ValueError, "predict_batch: output size %d x %d for image %zd",
                         out_heights[b], out_widths[b], b);
            goto done;
        }
        npy_intp shape[2] = {out_heights[b], out_widths[b]};
        PyObject *prob = PyArray_EMPTY(2, shape, NPY_FLOAT32, 0);
        if (!prob)
            goto done;
        PyList_SET_ITEM(out, b, prob);
        probs[b] = PyArray_DATA((PyArrayObject *)prob);
    }
    cx_status st;
    cx_cod_model *m = self->model;
    Py_BEGIN_ALLOW_THREADS
    st = cx_cod_predict_batch(m, n, data, heights, widths, size, probs, out_heights, out_widths);
    Py_END_ALLOW_THREADS
    if (st != CX_OK) {
        cx_py_error(st);
        goto done;
    }
    result = out;
    out = NULL;
done:
    Py_XDECREF(out);
    PyMem_Free(data);
    PyMem_Free(probs);
    PyMem_Free(dims);
    Py_DECREF(images);
    Py_DECREF(sizes);
    return result;
}

/* set_precision(name): "fp32", "fp16" or "bf16" for the model's CUDA backend (mixed
 * precision of its products, ops/cuda_abi.h); the CPU backend takes "fp32" only. */
static PyObject *cod_set_precision(CODModelObject *self, PyObject *arg) {
    const char *name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    int precision = name ? cx_precision_from_name(name) : -1;
    if (precision < 0) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "precision must be 'fp32', 'fp16' or 'bf16', got %R",
                         arg);
        return NULL;
    }
    if (!self->cuda) {
        if (precision != CX_PRECISION_FP32)
            return PyErr_Format(PyExc_ValueError, "precision '%s' needs a CUDA device: the CPU "
                                "backend computes in fp32", name);
        Py_RETURN_NONE;
    }
    if (cx_cuda_backend_set_precision(self->cuda, precision) != CX_OK)
        return cx_py_error(CX_EINVAL);
    self->precision = precision;
    Py_RETURN_NONE;
}

static PyObject *cod_precision(CODModelObject *self, PyObject *unused) {
    static const char *const names[] = {"fp32", "fp16", "bf16"};
    return PyUnicode_FromString(names[self->precision]);
}

/* device_memory() -> (free, total) bytes of the model's GPU (every process's use counts) */
static PyObject *cod_device_memory(CODModelObject *self, PyObject *unused) {
    if (!self->cuda)
        return PyErr_Format(PyExc_ValueError, "device_memory() is for a model on a CUDA device");
    size_t free_bytes = 0, total_bytes = 0;
    if (cx_cuda_backend_memory(self->cuda, &free_bytes, &total_bytes) != CX_OK)
        return cx_py_error(CX_ERUNTIME);
    return Py_BuildValue("(KK)", (unsigned long long)free_bytes,
                         (unsigned long long)total_bytes);
}

static PyObject *cod_arena_bytes(CODModelObject *self, PyObject *unused) {
    return PyLong_FromSize_t(cx_cod_arena_bytes(self->model));
}

/* plan_bytes(batch, height, width, mode=True) -> bytes (planning only, nothing reserved) */
static PyObject *cod_plan_bytes(CODModelObject *self, PyObject *args) {
    int batch, height, width, mode;
    PyObject *mode_obj = NULL;
    if (!PyArg_ParseTuple(args, "iii|O", &batch, &height, &width, &mode_obj) ||
        parse_mode(mode_obj, &mode) < 0)
        return NULL;
    size_t bytes;
    cx_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cx_cod_plan_bytes(self->model, batch, height, width, mode, &bytes);
    Py_END_ALLOW_THREADS
    if (st != CX_OK)
        return cx_py_error(st);
    return PyLong_FromSize_t(bytes);
}

static PyMethodDef cod_methods[] = {
    {"params", (PyCFunction)cod_params, METH_NOARGS,
     "1-D float32 view of the parameter buffer (backend 'cuda': a host copy)."},
    {"grads", (PyCFunction)cod_grads, METH_NOARGS,
     "1-D float32 view of the gradient buffer (backend 'cuda': a host copy)."},
    {"upload_params", (PyCFunction)cod_upload_params, METH_O,
     "upload_params(values): writes the whole parameter buffer from a float32 [total] array."},
    {"backend", (PyCFunction)cod_backend, METH_NOARGS, "'cpu' or 'cuda'."},
    {"deterministic", (PyCFunction)cod_deterministic, METH_NOARGS,
     "Whether the backend runs deterministic kernels only (always on the CPU)."},
    {"set_precision", (PyCFunction)cod_set_precision, METH_O,
     "set_precision('fp32' | 'fp16' | 'bf16'): mixed precision of a CUDA model's products."},
    {"precision", (PyCFunction)cod_precision, METH_NOARGS, "'fp32', 'fp16' or 'bf16'."},
    {"device_memory", (PyCFunction)cod_device_memory, METH_NOARGS,
     "(free, total) bytes of the model's GPU."},
    {"param_table", (PyCFunction)cod_param_table, METH_NOARGS, "[(name, shape, offset, decay)] in buffer order."},
    {"config", (PyCFunction)cod_config, METH_NOARGS, "The configuration as a dict."},
    {"forward", (PyCFunction)cod_forward, METH_VARARGS,
     "forward(x, mode=True) -> output logit maps; mode 'predict' (or False), 'train' (or True), "
     "'train_head' (frozen backbone) or 'train_checkpoint' (gradient checkpointing)."},
    {"loss", (PyCFunction)cod_loss, METH_O, "loss(y) -> dict of loss parts (after a training forward)."},
    {"backward", (PyCFunction)(void (*)(void))cod_backward, METH_VARARGS | METH_KEYWORDS,
     "backward(loss_scale=1.0, train_backbone=True): accumulates into grads()."},
    {"zero_grads", (PyCFunction)cod_zero_grads, METH_NOARGS, "Sets every gradient to zero."},
    {"probabilities", (PyCFunction)cod_probabilities, METH_NOARGS, "sigmoid(out_0) of the last forward."},
    {"routing", (PyCFunction)cod_routing, METH_NOARGS, "Per-scale gate probabilities and routing."},
    {"intermediates", (PyCFunction)cod_intermediates, METH_NOARGS, "Feature, neck and decoder maps."},
    {"arena_bytes", (PyCFunction)cod_arena_bytes, METH_NOARGS,
     "Bytes of the activation arena (the largest plan so far)."},
    {"plan_bytes", (PyCFunction)cod_plan_bytes, METH_VARARGS,
     "plan_bytes(batch, height, width, mode=True) -> bytes the planner measures for a "
     "forward (training: with loss and backward) of that shape and mode; reserves no "
     "arena and forgets the last forward."},
    {"predict_batch", (PyCFunction)cod_predict_batch, METH_VARARGS,
     "predict_batch(images, size, out_sizes) -> [float32 [h, w]]: uint8 [H, W, 3] images "
     "resized to size, normalised, run in predict mode; sigmoid(p1) resized to each out size."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CODModelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "codext._C.CODModel",
    .tp_basicsize = sizeof(CODModelObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "CODModel(backbone, decoder_dim=64, num_experts=7, moe_top_k=0, seed=0, "
              "ds_weight=0.5, balance_weight=0.01, *, backend='cpu', device=0): the native COD "
              "model; backend 'cuda' keeps its parameters on CUDA device `device` "
              "(libcodext_cuda.so, loaded on first use).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)cod_init,
    .tp_dealloc = (destructor)cod_dealloc,
    .tp_methods = cod_methods,
};

cx_cod_model *cx_py_cod_model(PyObject *obj) {
    if (!PyObject_TypeCheck(obj, &CODModelType)) {
        PyErr_Format(PyExc_TypeError, "model must be a codext._C.CODModel (Model._native), got %s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return ((CODModelObject *)obj)->model;
}

int cx_py_add_cod_type(PyObject *module) {
    if (PyType_Ready(&CODModelType) < 0)
        return -1;
    Py_INCREF(&CODModelType);
    if (PyModule_AddObject(module, "CODModel", (PyObject *)&CODModelType) < 0) {
        Py_DECREF(&CODModelType);
        return -1;
    }
    return 0;
}
