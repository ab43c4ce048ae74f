/* codext._testing: the training arithmetic (csrc/train) on NumPy buffers for the tests:
 * AdamW, schedules, clipping, EMA and the training-state file. No compute here; only
 * tests call these (the trainer runs the same C functions in codext._C).
 *
 * A parameter layout is passed as `params`: a list of (name, offset, shape, group, decay)
 * tuples (offset in floats into the flat buffers, group 0 = backbone / 1 = head, decay
 * 0/1). Buffers are 1-D; those updated in place must be writable C-contiguous arrays of
 * the exact dtype (float32, or int64 for step counts). */
#define PY_SSIZE_T_CLEAN
#define PY_ARRAY_UNIQUE_SYMBOL codext_testing_ARRAY_API /* module.c's table */
#define NO_IMPORT_ARRAY
#include "../python/binding.h"
#include "../train/optim.h"
#include "../train/train_state.h"

#include <string.h>

/* ---- argument helpers ------------------------------------------------------------- */

static void free_table(cx_param_table *table) {
    PyMem_Free(table->items);
    memset(table, 0, sizeof *table);
}

/* Builds a table over a buffer of `total` floats; 0, or -1 with an exception set. */
static int parse_table(PyObject *params, Py_ssize_t total, cx_param_table *table) {
    memset(table, 0, sizeof *table);
    PyObject *seq = PySequence_Fast(params, "params must be a list of (name, offset, shape, group, decay)");
    if (!seq)
        return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    table->items = PyMem_Calloc((size_t)count + 1, sizeof *table->items);
    if (!table->items) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    table->count = table->capacity = (int)count;
    table->total = (size_t)total;
    for (Py_ssize_t i = 0; i < count; i++) {
        cx_param *p = &table->items[i];
        const char *name;
        Py_ssize_t offset;
        PyObject *shape;
        int group, decay;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "snOip;params entries are "
                              "(name, offset, shape, group, decay)", &name, &offset, &shape,
                              &group, &decay))
            goto fail;
        PyObject *dims = PySequence_Fast(shape, "shape must be a sequence of ints");
        if (!dims)
            goto fail;
        Py_ssize_t ndim = PySequence_Fast_GET_SIZE(dims);
        if (ndim > CX_PARAM_MAX_DIMS || strlen(name) >= CX_PARAM_NAME_MAX || offset < 0) {
            Py_DECREF(dims);
            PyErr_Format(PyExc_ValueError, "parameter %s: rank <= %d, name < %d chars and offset "
                         ">= 0 required", name, CX_PARAM_MAX_DIMS, CX_PARAM_NAME_MAX);
            goto fail;
        }
        strcpy(p->name, name);
        p->ndim = (int)ndim;
        p->numel = 1;
        for (Py_ssize_t d = 0; d < ndim; d++) {
            long long dim = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(dims, d));
            if (dim < 0) {
                if (!PyErr_Occurred())
                    PyErr_Format(PyExc_ValueError, "parameter %s: negative dim", name);
                Py_DECREF(dims);
                goto fail;
            }
            p->shape[d] = dim;
            p->numel *= (size_t)dim;
        }
        Py_DECREF(dims);
        p->offset = (size_t)offset;
        p->group = group;
        p->decay = decay;
    }
    Py_DECREF(seq);
    cx_status st = cx_optim_check_table(table);
    if (st != CX_OK) {
        free_table(table);
        cx_py_error(st);
        return -1;
    }
    return 0;
fail:
    Py_DECREF(seq);
    free_table(table);
    return -1;
}

/* New reference to obj as a 1-D array of `type` and length n. In place (inout): obj must
 * already be a writable C-contiguous array of that exact dtype; else it is converted. */
static PyArrayObject *buffer(PyObject *obj, const char *what, int type, Py_ssize_t n, int inout) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a numpy array, got %s", what, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)obj;
    if (inout) {
        if (PyArray_TYPE(arr) != type || !PyArray_IS_C_CONTIGUOUS(arr) || !PyArray_ISWRITEABLE(arr)) {
            PyErr_Format(PyExc_TypeError, "%s is updated in place: it must be a writable C-contiguous "
                         "%s array", what, type == NPY_INT64 ? "int64" : "float32");
            return NULL;
        }
        Py_INCREF(arr);
    } else {
        arr = (PyArrayObject *)PyArray_FROMANY(obj, type, 0, 0, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
        if (!arr)
            return NULL;
    }
    if (PyArray_NDIM(arr) != 1 || PyArray_DIM(arr, 0) != n) {
        PyErr_Format(PyExc_ValueError, "%s must be 1-D of length %zd, got %d dims (first %zd)", what, n,
                     PyArray_NDIM(arr), PyArray_NDIM(arr) ? (Py_ssize_t)PyArray_DIM(arr, 0) : (Py_ssize_t)0);
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

static Py_ssize_t length_of(PyObject *obj, const char *what) {
    if (!PyArray_Check(obj) || PyArray_NDIM((PyArrayObject *)obj) != 1) {
        PyErr_Format(PyExc_TypeError, "%s must be a 1-D numpy array", what);
        return -1;
    }
    return PyArray_DIM((PyArrayObject *)obj, 0);
}

/* mask: None -> NULL (*held NULL); else a uint8 copy of length count. 0 or -1. */
static int parse_mask(PyObject *obj, int count, PyArrayObject **held, const unsigned char **mask) {
    *held = NULL;
    *mask = NULL;
    if (!obj || obj == Py_None)
        return 0;
    *held = buffer(obj, "mask", NPY_UINT8, count, 0);
    if (!*held)
        return -1;
    *mask = PyArray_DATA(*held);
    return 0;
}

/* ---- AdamW ---------------------------------------------------------------------------- */

static PyObject *py_adamw_step(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"values", "grads", "exp_avg", "exp_avg_sq", "steps", "params", "lrs",
                               "weight_decay", "betas", "eps", "mask", NULL};
    PyObject *o_values, *o_grads, *o_m, *o_v, *o_steps, *params, *mask_obj = Py_None;
    cx_adamw_config config = {{0.0, 0.0}, 1e-4, 0.9, 0.999, 1e-8};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOO(dd)|d(dd)dO", keywords, &o_values, &o_grads,
                                     &o_m, &o_v, &o_steps, &params, &config.lr[0], &config.lr[1],
                                     &config.weight_decay, &config.beta1, &config.beta2, &config.eps,
                                     &mask_obj))
        return NULL;
    Py_ssize_t total = length_of(o_values, "values");
    if (total < 0)
        return NULL;
    cx_param_table table;
    if (parse_table(params, total, &table) < 0)
        return NULL;
    PyArrayObject *values = buffer(o_values, "values", NPY_FLOAT32, total, 1);
    PyArrayObject *grads = values ? buffer(o_grads, "grads", NPY_FLOAT32, total, 0) : NULL;
    PyArrayObject *m = grads ? buffer(o_m, "exp_avg", NPY_FLOAT32, total, 1) : NULL;
    PyArrayObject *v = m ? buffer(o_v, "exp_avg_sq", NPY_FLOAT32, total, 1) : NULL;
    PyArrayObject *steps = v ? buffer(o_steps, "steps", NPY_INT64, table.count, 1) : NULL;
    PyArrayObject *mask_arr = NULL;
    const unsigned char *mask = NULL;
    PyObject *result = NULL;
    if (steps && parse_mask(mask_obj, table.count, &mask_arr, &mask) == 0) {
        cx_status st;
        Py_BEGIN_ALLOW_THREADS
        st = cx_adamw_step(&table, mask, &config, PyArray_DATA(steps), PyArray_DATA(values),
                           PyArray_DATA(grads), PyArray_DATA(m), PyArray_DATA(v));
        Py_END_ALLOW_THREADS
        if (st == CX_OK) {
            Py_INCREF(Py_None);
            result = Py_None;
        } else {
            cx_py_error(st);
        }
    }
    Py_XDECREF(values);
    Py_XDECREF(grads);
    Py_XDECREF(m);
    Py_XDECREF(v);
    Py_XDECREF(steps);
    Py_XDECREF(mask_arr);
    free_table(&table);
    return result;
}

/* optim_classify(names, ndims) -> list of (group, decay): the twin's rule */
static PyObject *py_optim_classify(PyObject *self, PyObject *args) {
    PyObject *names, *ndims;
    if (!PyArg_ParseTuple(args, "OO", &names, &ndims))
        return NULL;
    PyObject *params = PyList_New(0);
    Py_ssize_t n = PySequence_Size(names);
    if (!params || n < 0 || PySequence_Size(ndims) != n) {
        Py_XDECREF(params);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "names and ndims differ in length");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PySequence_GetItem(names, i), *ndim = PySequence_GetItem(ndims, i);
        PyObject *entry = NULL;
        if (name && ndim) {
            const char *text = PyUnicode_AsUTF8(name);
            long rank = PyLong_AsLong(ndim);
            if (text && !PyErr_Occurred())
                entry = Py_BuildValue("(ii)", strncmp(text, "backbone.", 9) == 0 ? CX_GROUP_BACKBONE
                                                                                 : CX_GROUP_HEAD,
                                      cx_optim_decays(text, (int)rank));
        }
        Py_XDECREF(name);
        Py_XDECREF(ndim);
        if (!entry || PyList_Append(params, entry) < 0) {
            Py_XDECREF(entry);
            Py_DECREF(params);
            return NULL;
        }
        Py_DECREF(entry);
    }
    return params;
}

/* ---- schedules ------------------------------------------------------------------------- */

static int parse_kind(const char *name, cx_schedule_kind *kind) {
    if (strcmp(name, "onecycle") == 0)
        *kind = CX_SCHEDULE_ONECYCLE;
    else if (strcmp(name, "cosine") == 0)
        *kind = CX_SCHEDULE_COSINE;
    else {
        PyErr_Format(PyExc_ValueError, "scheduler must be 'onecycle' or 'cosine', got '%s'", name);
        return -1;
    }
    return 0;
}

/* schedule_lr(kind, total_steps, base_lr, warmup_steps=0, min_lr=0, stage_lr=base_lr)
 * -> float64 [total_steps] */
static PyObject *py_schedule_lr(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"kind", "total_steps", "base_lr", "warmup_steps", "min_lr", "stage_lr", NULL};
    const char *kind_name;
    long long total, warmup = 0;
    double base_lr, min_lr = 0.0, stage_lr = -1.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sLd|Ldd", keywords, &kind_name, &total, &base_lr,
                                     &warmup, &min_lr, &stage_lr))
        return NULL;
    cx_schedule schedule = {CX_SCHEDULE_ONECYCLE, total, warmup, min_lr, stage_lr < 0 ? base_lr : stage_lr};
    if (parse_kind(kind_name, &schedule.kind) < 0)
        return NULL;
    npy_intp dims[1] = {total > 0 ? (npy_intp)total : 0};
    PyObject *out = PyArray_EMPTY(1, dims, NPY_FLOAT64, 0);
    if (!out)
        return NULL;
    double *lr = PyArray_DATA((PyArrayObject *)out);
    if (total < 1) {
        double unused;
        cx_status st = cx_schedule_lr(&schedule, 0, base_lr, &unused);
        Py_DECREF(out);
        return cx_py_error(st);
    }
    for (long long s = 0; s < total; s++) {
        cx_status st = cx_schedule_lr(&schedule, s, base_lr, &lr[s]);
        if (st != CX_OK) {
            Py_DECREF(out);
            return cx_py_error(st);
        }
    }
    return out;
}

/* lr_plan(scheduler, stage1_steps, stage2_steps, lr, stage2_lr, backbone_lr_mult,
 * warmup_steps, min_lr) -> dict of arrays over the run: stage, stage_step, stage_begins
 * (int64), lr_backbone, lr_head (float64) */
static PyObject *py_lr_plan(PyObject *self, PyObject *args) {
    const char *kind_name;
    long long s1, s2, warmup;
    cx_lr_plan plan;
    if (!PyArg_ParseTuple(args, "sLLdddLd", &kind_name, &s1, &s2, &plan.lr, &plan.stage2_lr,
                          &plan.backbone_lr_mult, &warmup, &plan.min_lr))
        return NULL;
    if (parse_kind(kind_name, &plan.kind) < 0)
        return NULL;
    if (s1 < 0 || s2 < 0) {
        PyErr_SetString(PyExc_ValueError, "stage lengths must be >= 0");
        return NULL;
    }
    plan.stage_steps[0] = s1;
    plan.stage_steps[1] = s2;
    plan.warmup_steps = warmup;
    npy_intp dims[1] = {(npy_intp)(s1 + s2)};
    PyObject *arrays[5] = {PyArray_EMPTY(1, dims, NPY_INT64, 0), PyArray_EMPTY(1, dims, NPY_INT64, 0),
                           PyArray_EMPTY(1, dims, NPY_INT64, 0), PyArray_EMPTY(1, dims, NPY_FLOAT64, 0),
                           PyArray_EMPTY(1, dims, NPY_FLOAT64, 0)};
    PyObject *result = NULL;
    for (int k = 0; k < 5; k++)
        if (!arrays[k])
            goto done;
    for (long long t = 0; t < s1 + s2; t++) {
        cx_lr_step at;
        cx_status st = cx_lr_plan_at(&plan, t, &at);
        if (st != CX_OK) {
            cx_py_error(st);
            goto done;
        }
        ((int64_t *)PyArray_DATA((PyArrayObject *)arrays[0]))[t] = at.stage;
        ((int64_t *)PyArray_DATA((PyArrayObject *)arrays[1]))[t] = at.stage_step;
        ((int64_t *)PyArray_DATA((PyArrayObject *)arrays[2]))[t] = at.stage_begins;
        ((double *)PyArray_DATA((PyArrayObject *)arrays[3]))[t] = at.lr[CX_GROUP_BACKBONE];
        ((double *)PyArray_DATA((PyArrayObject *)arrays[4]))[t] = at.lr[CX_GROUP_HEAD];
    }
    result = Py_BuildValue("{s:O,s:O,s:O,s:O,s:O}", "stage", arrays[0], "stage_step", arrays[1],
                           "stage_begins", arrays[2], "lr_backbone", arrays[3], "lr_head", arrays[4]);
done:
    for (int k = 0; k < 5; k++)
        Py_XDECREF(arrays[k]);
    return result;
}

/* ---- clipping, scaling, EMA ------------------------------------------------------------ */

/* grad_norm(grads, params, mask=None, max_norm=0) -> norm before clipping; clips in place
 * when max_norm > 0 (grads must then be a writable float32 array). */
static PyObject *py_clip_grad_norm(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"grads", "params", "mask", "max_norm", NULL};
    PyObject *o_grads, *params, *mask_obj = Py_None;
    double max_norm = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|Od", keywords, &o_grads, &params, &mask_obj,
                                     &max_norm))
        return NULL;
    Py_ssize_t total = length_of(o_grads, "grads");
    cx_param_table table;
    if (total < 0 || parse_table(params, total, &table) < 0)
        return NULL;
    PyArrayObject *grads = buffer(o_grads, "grads", NPY_FLOAT32, total, max_norm > 0.0);
    PyArrayObject *mask_arr = NULL;
    const unsigned char *mask = NULL;
    PyObject *result = NULL;
    if (grads && parse_mask(mask_obj, table.count, &mask_arr, &mask) == 0) {
        double norm = 0.0;
        cx_status st;
        Py_BEGIN_ALLOW_THREADS
        st = cx_clip_grad_norm(&table, mask, PyArray_DATA(grads), max_norm, &norm);
        Py_END_ALLOW_THREADS
        result = st == CX_OK ? PyFloat_FromDouble(norm) : cx_py_error(st);
    }
    Py_XDECREF(grads);
    Py_XDECREF(mask_arr);
    free_table(&table);
    return result;
}

/* grads_scale(grads, params, scale, mask=None): in place */
static PyObject *py_grads_scale(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"grads", "params", "scale", "mask", NULL};
    PyObject *o_grads, *params, *mask_obj = Py_None;
    float scale;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOf|O", keywords, &o_grads, &params, &scale, &mask_obj))
        return NULL;
    Py_ssize_t total = length_of(o_grads, "grads");
    cx_param_table table;
    if (total < 0 || parse_table(params, total, &table) < 0)
        return NULL;
    PyArrayObject *grads = buffer(o_grads, "grads", NPY_FLOAT32, total, 1);
    PyArrayObject *mask_arr = NULL;
    const unsigned char *mask = NULL;
    PyObject *result = NULL;
    if (grads && parse_mask(mask_obj, table.count, &mask_arr, &mask) == 0) {
        Py_BEGIN_ALLOW_THREADS
        cx_grads_scale(&table, mask, PyArray_DATA(grads), scale);
        Py_END_ALLOW_THREADS
        Py_INCREF(Py_None);
        result = Py_None;
    }
    Py_XDECREF(grads);
    Py_XDECREF(mask_arr);
    free_table(&table);
    return result;
}

/* ema_update(ema, values, params, decay, t) -> d used; ema in place */
static PyObject *py_ema_update(PyObject *self, PyObject *args) {
    PyObject *o_ema, *o_values, *params;
    double decay;
    long long t;
    if (!PyArg_ParseTuple(args, "OOOdL", &o_ema, &o_values, &params, &decay, &t))
        return NULL;
    Py_ssize_t total = length_of(o_ema, "ema");
    cx_param_table table;
    if (total < 0 || parse_table(params, total, &table) < 0)
        return NULL;
    PyArrayObject *ema = buffer(o_ema, "ema", NPY_FLOAT32, total, 1);
    PyArrayObject *values = ema ? buffer(o_values, "values", NPY_FLOAT32, total, 0) : NULL;
    PyObject *result = NULL;
    if (values) {
        double d = 0.0;
        Py_BEGIN_ALLOW_THREADS
        cx_ema_update(&table, decay, t, PyArray_DATA(values), PyArray_DATA(ema), &d);
        Py_END_ALLOW_THREADS
        result = PyFloat_FromDouble(d);
    }
    Py_XDECREF(ema);
    Py_XDECREF(values);
    free_table(&table);
    return result;
}

static PyObject *py_ema_decay_at(PyObject *self, PyObject *args) {
    double decay;
    long long t;
    if (!PyArg_ParseTuple(args, "dL", &decay, &t))
        return NULL;
    return PyFloat_FromDouble(cx_ema_decay_at(decay, t));
}

/* ---- training state -------------------------------------------------------------------- */

#define STATE_INTS 8
static const char *const state_int_keys[STATE_INTS] = {
    "step", "epoch", "epoch_step", "stage", "stage_step", "seed", "ema_updates", "loss_scale_good_steps"};

/* train_state_save(path, params, state: dict, extra: dict[str, str] = {}) */
static PyObject *py_train_state_save(PyObject *self, PyObject *args) {
    PyObject *path_obj, *params, *state_dict, *extra = NULL;
    if (!PyArg_ParseTuple(args, "O&OO!|O!", PyUnicode_FSConverter, &path_obj, &params, &PyDict_Type,
                          &state_dict, &PyDict_Type, &extra))
        return NULL;
    PyObject *result = NULL;
    PyArrayObject *arrays[4] = {NULL, NULL, NULL, NULL};
    const char **keys = NULL, **values = NULL;
    cx_param_table table = {0};
    cx_train_state state;
    memset(&state, 0, sizeof state);
    static const char *const names[4] = {"ema", "exp_avg", "exp_avg_sq", "param_steps"};
    PyObject *ema_obj = PyDict_GetItemString(state_dict, "ema");
    Py_ssize_t total = ema_obj ? length_of(ema_obj, "state['ema']") : -1;
    if (total < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_KeyError, "state needs 'ema'");
        goto done;
    }
    if (parse_table(params, total, &table) < 0)
        goto done;
    for (int k = 0; k < 4; k++) {
        PyObject *obj = PyDict_GetItemString(state_dict, names[k]);
        if (!obj) {
            PyErr_Format(PyExc_KeyError, "state needs '%s'", names[k]);
            goto done;
        }
        arrays[k] = buffer(obj, names[k], k == 3 ? NPY_INT64 : NPY_FLOAT32, k == 3 ? table.count : total, 0);
        if (!arrays[k])
            goto done;
    }
    state.ema = PyArray_DATA(arrays[0]);
    state.exp_avg = PyArray_DATA(arrays[1]);
    state.exp_avg_sq = PyArray_DATA(arrays[2]);
    state.param_steps = PyArray_DATA(arrays[3]);
    long long ints[STATE_INTS];
    for (int k = 0; k < STATE_INTS; k++) {
        PyObject *obj = PyDict_GetItemString(state_dict, state_int_keys[k]);
        ints[k] = 0;
        if (obj) {
            ints[k] = k == 5 ? (long long)PyLong_AsUnsignedLongLong(obj) : PyLong_AsLongLong(obj);
            if (PyErr_Occurred())
                goto done;
        }
    }
    state.step = ints[0];
    state.epoch = ints[1];
    state.epoch_step = ints[2];
    state.stage = (int)ints[3];
    state.stage_step = ints[4];
    state.seed = (uint64_t)ints[5];
    state.ema_updates = ints[6];
    state.loss_scale_good_steps = ints[7];
    PyObject *scale = PyDict_GetItemString(state_dict, "loss_scale");
    state.loss_scale = scale ? PyFloat_AsDouble(scale) : 1.0;
    if (PyErr_Occurred())
        goto done;
    Py_ssize_t n_extra;
    if (cx_py_string_dict(extra, "extra metadata", &n_extra, &keys, &values) < 0)
        goto done;
    cx_status st;
    const char *path = PyBytes_AS_STRING(path_obj);
    Py_BEGIN_ALLOW_THREADS
    st = cx_train_state_save(path, &table, &state, (int)n_extra, keys, values);
    Py_END_ALLOW_THREADS
    if (st != CX_OK) {
        cx_py_error(st);
        goto done;
    }
    Py_INCREF(Py_None);
    result = Py_None;
done:
    for (int j = 0; j < 4; j++)
        Py_XDECREF(arrays[j]);
    PyMem_Free(keys);
    PyMem_Free(values);
    free_table(&table);
    Py_DECREF(path_obj);
    return result;
}

/* train_state_load(path, params, total) -> (state dict, metadata dict) */
static PyObject *py_train_state_load(PyObject *self, PyObject *args) {
    PyObject *path_obj, *params;
    Py_ssize_t total;
    if (!PyArg_ParseTuple(args, "O&On", PyUnicode_FSConverter, &path_obj, &params, &total))
        return NULL;
    PyObject *result = NULL, *arrays[4] = {NULL, NULL, NULL, NULL}, *metadata = NULL;
    cx_param_table table = {0};
    cx_st_file *file = NULL;
    cx_train_state state;
    memset(&state, 0, sizeof state);
    if (total < 0 || parse_table(params, total, &table) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "total must be >= 0");
        goto done;
    }
    npy_intp flat[1] = {(npy_intp)total}, per_param[1] = {(npy_intp)table.count};
    for (int k = 0; k < 3; k++)
        if (!(arrays[k] = PyArray_ZEROS(1, flat, NPY_FLOAT32, 0)))
            goto done;
    if (!(arrays[3] = PyArray_ZEROS(1, per_param, NPY_INT64, 0)))
        goto done;
    state.ema = PyArray_DATA((PyArrayObject *)arrays[0]);
    state.exp_avg = PyArray_DATA((PyArrayObject *)arrays[1]);
    state.exp_avg_sq = PyArray_DATA((PyArrayObject *)arrays[2]);
    state.param_steps = PyArray_DATA((PyArrayObject *)arrays[3]);
    cx_status st;
    const char *path = PyBytes_AS_STRING(path_obj);
    Py_BEGIN_ALLOW_THREADS
    st = cx_train_state_load(path, &table, &state, &file);
    Py_END_ALLOW_THREADS
    if (st != CX_OK) {
        cx_py_error(st);
        goto done;
    }
    if (!(metadata = PyDict_New()))
        goto done;
    for (int k = 0; k < file->n_metadata; k++) {
        PyObject *v = PyUnicode_FromString(file->metadata_values[k]);
        if (!v || PyDict_SetItemString(metadata, file->metadata_keys[k], v) < 0) {
            Py_XDECREF(v);
            goto done;
        }
        Py_DECREF(v);
    }
    result = Py_BuildValue(
        "({s:L,s:L,s:L,s:i,s:L,s:K,s:L,s:d,s:L,s:O,s:O,s:O,s:O}O)", "step", (long long)state.step,
        "epoch", (long long)state.epoch, "epoch_step", (long long)state.epoch_step, "stage", state.stage,
        "stage_step", (long long)state.stage_step, "seed", (unsigned long long)state.seed,
        "ema_updates", (long long)state.ema_updates, "loss_scale", state.loss_scale,
        "loss_scale_good_steps", (long long)state.loss_scale_good_steps, "ema", arrays[0], "exp_avg",
        arrays[1], "exp_avg_sq", arrays[2], "param_steps", arrays[3], metadata);
done:
    for (int k = 0; k < 4; k++)
        Py_XDECREF(arrays[k]);
    Py_XDECREF(metadata);
    cx_st_close(file);
    free_table(&table);
    Py_DECREF(path_obj);
    return result;
}

PyMethodDef cx_test_train_methods[] = {
    {"adamw_step", (PyCFunction)(void (*)(void))py_adamw_step, METH_VARARGS | METH_KEYWORDS,
     "adamw_step(values, grads, exp_avg, exp_avg_sq, steps, params, lrs=(backbone, head), "
     "weight_decay=1e-4, betas=(0.9, 0.999), eps=1e-8, mask=None): one torch AdamW step in place."},
    {"optim_classify", py_optim_classify, METH_VARARGS,
     "optim_classify(names, ndims) -> [(group, decay)]: the twin's group and weight-decay rule."},
    {"schedule_lr", (PyCFunction)(void (*)(void))py_schedule_lr, METH_VARARGS | METH_KEYWORDS,
     "schedule_lr(kind, total_steps, base_lr, warmup_steps=0, min_lr=0, stage_lr=base_lr) -> "
     "float64 lr per step of one stage."},
    {"lr_plan", py_lr_plan, METH_VARARGS,
     "lr_plan(scheduler, stage1_steps, stage2_steps, lr, stage2_lr, backbone_lr_mult, warmup_steps, "
     "min_lr) -> dict of per-step arrays (stage, stage_step, stage_begins, lr_backbone, lr_head)."},
    {"clip_grad_norm", (PyCFunction)(void (*)(void))py_clip_grad_norm, METH_VARARGS | METH_KEYWORDS,
     "clip_grad_norm(grads, params, mask=None, max_norm=0) -> norm before clipping (clips in place "
     "when max_norm > 0)."},
    {"grads_scale", (PyCFunction)(void (*)(void))py_grads_scale, METH_VARARGS | METH_KEYWORDS,
     "grads_scale(grads, params, scale, mask=None): grads *= scale in place."},
    {"ema_update", py_ema_update, METH_VARARGS,
     "ema_update(ema, values, params, decay, t) -> decay used; ema updated in place."},
    {"ema_decay_at", py_ema_decay_at, METH_VARARGS, "ema_decay_at(decay, t) -> min(decay, (1+t)/(10+t))."},
    {"train_state_save", py_train_state_save, METH_VARARGS,
     "train_state_save(path, params, state, extra={}): the training-state file, atomically."},
    {"train_state_load", py_train_state_load, METH_VARARGS,
     "train_state_load(path, params, total) -> (state dict, metadata dict)."},
    {NULL, NULL, 0, NULL},
};
