/* _C.Trainer: the C trainer (csrc/train/trainer.h) for codext.train. Python calls it only
 * between epochs: run_epoch() runs a whole epoch in C with the GIL released. */
#define PY_SSIZE_T_CLEAN
#include "model_binding.h"
#include "../train/trainer.h"

#include <string.h>

typedef struct {
    PyObject_HEAD
    cx_trainer *trainer;
    PyObject *model_obj; /* keeps the model alive */
    PyObject *comm_obj;  /* keeps the communicator alive (data parallelism) */
    /* the images and masks of the last run_epoch: the batch prefetch may still read them
     * (a worker thread builds the next batch from them after run_epoch returns) */
    PyObject *images_obj, *masks_obj;
    int busy;            /* a run_epoch / step is in progress (GIL released) */
} TrainerObject;

static int trainer_init(TrainerObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"model", "n_train", "height", "width", "batch_size",
                               "accumulation_steps", "epochs", "stage1_epochs", "scheduler",
                               "lr", "stage2_lr", "backbone_lr_mult", "warmup_epochs", "min_lr",
                               "weight_decay", "betas", "eps", "grad_clip", "ema_decay", "seed",
                               "augment", "world_size", "rank", "loss_scaling",
                               "loss_scale_init", "loss_scale_growth_interval",
                               "gradient_checkpointing", "prefetch", "overlap_comm",
                               "bucket_floats", NULL};
    PyObject *model_obj;
    long long n_train, epochs = 1, stage1_epochs = 0;
    int height, width, batch_size = 1, accumulation = 1, augment = 1, world_size = 1, rank = 0;
    int loss_scaling = 0, checkpointing = 0, prefetch = -1, overlap_comm = 1;
    long long growth_interval = 2000, bucket_floats = 0;
    const char *scheduler = "onecycle";
    unsigned long long seed = 0;
    cx_trainer_config cfg = {.lr = 2.5e-4, .stage2_lr = -1.0, .backbone_lr_mult = 0.1,
                             .warmup_epochs = 0.0, .min_lr = 1e-6, .weight_decay = 1e-4,
                             .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .grad_clip = 0.5,
                             .ema_decay = 0.999, .loss_scale_init = 65536.0};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OLii|$iiLLsdddddd(dd)dddKpiipdLpipL", keywords,
                                     &model_obj, &n_train, &height, &width, &batch_size,
                                     &accumulation, &epochs, &stage1_epochs, &scheduler, &cfg.lr,
                                     &cfg.stage2_lr, &cfg.backbone_lr_mult, &cfg.warmup_epochs,
                                     &cfg.min_lr, &cfg.weight_decay, &cfg.beta1, &cfg.beta2,
                                     &cfg.eps, &cfg.grad_clip, &cfg.ema_decay, &seed, &augment,
                                     &world_size, &rank, &loss_scaling, &cfg.loss_scale_init,
                                     &growth_interval, &checkpointing, &prefetch,
                                     &overlap_comm, &bucket_floats))
        return -1;
    cx_cod_model *model = cx_py_cod_model(model_obj);
    if (!model)
        return -1;
    if (strcmp(scheduler, "onecycle") == 0)
        cfg.scheduler = CX_SCHEDULE_ONECYCLE;
    else if (strcmp(scheduler, "cosine") == 0)
        cfg.scheduler = CX_SCHEDULE_COSINE;
    else {
        PyErr_Format(PyExc_ValueError, "scheduler must be 'onecycle' or 'cosine', got '%s'",
                     scheduler);
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "the trainer is running");
        return -1;
    }
    cfg.batch_size = batch_size;
    cfg.accumulation_steps = accumulation;
    cfg.epochs = epochs;
    cfg.stage1_epochs = stage1_epochs;
    if (cfg.stage2_lr < 0)
        cfg.stage2_lr = cfg.lr;
    cfg.seed = seed;
    cfg.augment = augment;
    cfg.world_size = world_size;
    cfg.loss_scaling = loss_scaling;
    cfg.loss_scale_growth_interval = growth_interval;
    cfg.rank = rank;
    cfg.gradient_checkpointing = checkpointing;
    cfg.prefetch = prefetch;
    cfg.overlap_comm = overlap_comm;
    cfg.bucket_floats = bucket_floats;
    cfg.augment_config = cx_augment_defaults();
    if (!model) {
        PyErr_SetString(PyExc_ValueError, "model is not initialised");
        return -1;
    }
    cx_trainer *trainer = NULL;
    cx_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cx_trainer_create(model, &cfg, n_train, height, width, &trainer);
    Py_END_ALLOW_THREADS
    if (st != CX_OK) {
        cx_py_error(st);
        return -1;
    }
    cx_trainer_free(self->trainer);
    self->trainer = trainer;
    Py_INCREF(model_obj);
    Py_XSETREF(self->model_obj, model_obj);
    return 0;
}

static void trainer_dealloc(TrainerObject *self) {
    cx_trainer_free(self->trainer); /* joins the prefetch worker: then the data may go */
    Py_XDECREF(self->images_obj);
    Py_XDECREF(self->masks_obj);
    Py_XDECREF(self->model_obj);
    Py_XDECREF(self->comm_obj);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int ready(TrainerObject *self) {
    if (!self->trainer) {
        PyErr_SetString(PyExc_RuntimeError, "Trainer is not initialised");
        return 0;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "the trainer is running (another thread)");
        return 0;
    }
    return 1;
}

/* A C-contiguous uint8 array of rank ndim whose last dimension is last (0: any). */
static int check_u8(PyObject *obj, const char *what, int ndim, npy_intp last) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a numpy array, got %s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    if (PyArray_TYPE(a) != NPY_UINT8 || !PyArray_IS_C_CONTIGUOUS(a)) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous uint8 array", what);
        return -1;
    }
    if (PyArray_NDIM(a) != ndim || (last && PyArray_DIM(a, ndim - 1) != last)) {
        PyErr_Format(PyExc_ValueError, "%s must have shape %s, got rank %d", what,
                     ndim == 4 ? "[N, H, W, 3]" : "[N, H, W]", PyArray_NDIM(a));
        return -1;
    }
    return 0;
}

/* None -> NULL; else a writable C-contiguous float64 array of >= n items. 0 or -1. */
static int out_f64(PyObject *obj, const char *what, int64_t n, double **data) {
    *data = NULL;
    if (!obj || obj == Py_None)
        return 0;
    if (!PyArray_Check(obj) || PyArray_TYPE((PyArrayObject *)obj) != NPY_FLOAT64 ||
        !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)obj) ||
        !PyArray_ISWRITEABLE((PyArrayObject *)obj) || PyArray_SIZE((PyArrayObject *)obj) < n) {
        PyErr_Format(PyExc_TypeError, "%s must be a writable C-contiguous float64 array of at "
                     "least %lld items (steps per epoch)", what, (long long)n);
        return -1;
    }
    *data = PyArray_DATA((PyArrayObject *)obj);
    return 0;
}

/* Between optimizer steps: runs Python's signal handlers (Ctrl-C raises KeyboardInterrupt
 * in the main thread); nonzero, with the exception set, stops the epoch. */
static int check_signals(void *unused) {
    PyGILState_STATE gil = PyGILState_Ensure();
    int stop = PyErr_CheckSignals() < 0;
    PyGILState_Release(gil);
    return stop;
}

/* run_epoch(images, masks, step_loss=None, step_lr=None, max_steps=-1) -> steps run */
static PyObject *trainer_run_epoch(TrainerObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"images", "masks", "step_loss", "step_lr", "max_steps", NULL};
    PyObject *images, *masks, *loss_obj = Py_None, *lr_obj = Py_None;
    long long max_steps = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|OOL", keywords, &images, &masks,
                                     &loss_obj, &lr_obj, &max_steps))
        return NULL;
    if (!ready(self))
        return NULL;
    cx_trainer *t = self->trainer;
    double *step_loss, *step_lr;
    if (check_u8(images, "images", 4, 3) < 0 || check_u8(masks, "masks", 3, 0) < 0 ||
        out_f64(loss_obj, "step_loss", t->steps_per_epoch, &step_loss) < 0 ||
        out_f64(lr_obj, "step_lr", t->steps_per_epoch, &step_lr) < 0)
        return NULL;
    PyArrayObject *im = (PyArrayObject *)images, *mk = (PyArrayObject *)masks;
    if (PyArray_DIM(mk, 0) != PyArray_DIM(im, 0) || PyArray_DIM(mk, 1) != PyArray_DIM(im, 1) ||
        PyArray_DIM(mk, 2) != PyArray_DIM(im, 2)) {
        PyErr_SetString(PyExc_ValueError, "masks must be [N, H, W] like images [N, H, W, 3]");
        return NULL;
    }
    int64_t n_done = 0;
    cx_status st;
    /* a batch prefetched by the last call reads the arrays it was given: they stay alive
     * while it may run (trainer_dealloc joins the worker first), and new arrays drop it */
    if (self->images_obj != images || self->masks_obj != masks) {
        if (t->prefetch)
            cx_prefetch_drop(t->prefetch);
        Py_INCREF(images);
        Py_INCREF(masks);
        Py_XSETREF(self->images_obj, images);
        Py_XSETREF(self->masks_obj, masks);
    }
    self->busy = 1;
    t->interrupted = check_signals;
    Py_BEGIN_ALLOW_THREADS
    st = cx_trainer_run_epoch(t, PyArray_DATA(im), PyArray_DATA(mk), PyArray_DIM(im, 0),
                              (int)PyArray_DIM(im, 1), (int)PyArray_DIM(im, 2), step_loss,
                              step_lr, max_steps, &n_done);
    Py_END_ALLOW_THREADS
    t->interrupted = NULL;
    self->busy = 0;
    if (st != CX_OK)
        return PyErr_Occurred() ? NULL : cx_py_error(st); /* KeyboardInterrupt stays */
    return PyLong_FromLongLong(n_done);
}

static PyObject *last_step_dict(const cx_trainer *t) {
    const cx_trainer_step_info *s = &t->last;
    return Py_BuildValue("{s:d,s:d,s:d,s:d,s:d,s:i}", "loss", s->loss, "lr_head",
                         s->lr[CX_GROUP_HEAD], "lr_backbone", s->lr[CX_GROUP_BACKBONE],
                         "grad_norm", s->grad_norm, "ema_decay", s->ema_decay, "stage", s->stage);
}

/* step_on_batch(x [A B, 3, H, W] float32, y [A B, 1, H, W] float32) -> step info dict */
static PyObject *trainer_step_on_batch(TrainerObject *self, PyObject *args) {
    PyObject *x_obj, *y_obj;
    if (!PyArg_ParseTuple(args, "OO", &x_obj, &y_obj) || !ready(self))
        return NULL;
    cx_trainer *t = self->trainer;
    PyArrayObject *x = cx_py_as_float32(x_obj, "x");
    PyArrayObject *y = x ? cx_py_as_float32(y_obj, "y") : NULL;
    PyObject *result = NULL;
    if (!y)
        goto done;
    npy_intp rows = (npy_intp)t->cfg.batch_size * t->cfg.accumulation_steps;
    npy_intp want_x[4] = {rows, 3, t->height, t->width}, want_y[4] = {rows, 1, t->height, t->width};
    int ok = PyArray_NDIM(x) == 4 && PyArray_NDIM(y) == 4;
    for (int d = 0; ok && d < 4; d++)
        ok = PyArray_DIM(x, d) == want_x[d] && PyArray_DIM(y, d) == want_y[d];
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "step_on_batch needs x [%zd, 3, %d, %d] and y [%zd, 1, "
                     "%d, %d] (batch_size x accumulation_steps rows)", (Py_ssize_t)rows,
                     t->height, t->width, (Py_ssize_t)rows, t->height, t->width);
        goto done;
    }
    cx_status st;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    st = cx_trainer_step(t, PyArray_DATA(x), PyArray_DATA(y), t->height, t->width);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (st != CX_OK) {
        cx_py_error(st);
        goto done;
    }
    result = last_step_dict(t);
done:
    Py_XDECREF(x);
    Py_XDECREF(y);
    return result;
}

static PyObject *trainer_last_step(TrainerObject *self, PyObject *unused) {
    return ready(self) ? last_step_dict(self->trainer) : NULL;
}

/* A state buffer: a view on the CPU; a host copy of a device trainer's. */
static PyObject *state_floats(TrainerObject *self, float *host, const float *device) {
    if (!ready(self))
        return NULL;
    cx_trainer *t = self->trainer;
    size_t n = t->model->table.total;
    if (!t->dev)
        return cx_py_view((PyObject *)self, host, n, NPY_FLOAT32);
    npy_intp dims[1] = {(npy_intp)n};
    PyObject *arr = PyArray_EMPTY(1, dims, NPY_FLOAT32, 0);
    if (!arr)
        return NULL;
    cx_backend *be = t->model->be;
    be->download(be, PyArray_DATA((PyArrayObject *)arr), device, n);
    cx_status st = be->sync(be);
    if (st != CX_OK) {
        Py_DECREF(arr);
        return cx_py_error(st);
    }
    return arr;
}

static PyObject *trainer_ema(TrainerObject *self, PyObject *unused) {
    cx_trainer *t = self->trainer;
    return state_floats(self, t ? t->state.ema : NULL, t && t->dev ? t->dev->ema : NULL);
}

static PyObject *trainer_exp_avg(TrainerObject *self, PyObject *unused) {
    cx_trainer *t = self->trainer;
    return state_floats(self, t ? t->state.exp_avg : NULL, t && t->dev ? t->dev->exp_avg : NULL);
}

static PyObject *trainer_exp_avg_sq(TrainerObject *self, PyObject *unused) {
    cx_trainer *t = self->trainer;
    return state_floats(self, t ? t->state.exp_avg_sq : NULL,
                        t && t->dev ? t->dev->exp_avg_sq : NULL);
}

static PyObject *trainer_param_steps(TrainerObject *self, PyObject *unused) {
    if (!ready(self))
        return NULL;
    cx_trainer *t = self->trainer;
    if (!t->dev)
        return cx_py_view((PyObject *)self, t->state.param_steps, (size_t)t->model->table.count,
                          NPY_INT64);
    npy_intp dims[1] = {(npy_intp)t->model->table.count};
    PyObject *arr = PyArray_EMPTY(1, dims, NPY_INT64, 0);
    if (!arr)
        return NULL;
    cx_status st = cx_device_step_download_steps(t->dev, PyArray_DATA((PyArrayObject *)arr));
    if (st != CX_OK) {
        Py_DECREF(arr);
        return cx_py_error(st);
    }
    return arr;
}

static PyObject *trainer_backend(TrainerObject *self, PyObject *unused) {
    return ready(self) ? PyUnicode_FromString(self->trainer->dev ? "cuda" : "cpu") : NULL;
}

static PyObject *trainer_state(TrainerObject *self, PyObject *unused) {
    if (!ready(self))
        return NULL;
    const cx_trainer *t = self->trainer;
    const cx_train_state *s = &t->state;
    int64_t hits = 0, misses = 0;
    if (t->prefetch)
        cx_prefetch_counts(t->prefetch, &hits, &misses);
    return Py_BuildValue(
        "{s:L,s:L,s:L,s:i,s:L,s:L,s:K,s:L,s:L,s:L,s:L,s:L,s:i,s:i,s:L,s:L,s:i,s:d,s:d,s:L,s:L,"
        "s:d,s:L,s:L,s:L}",
        "step",
        (long long)s->step, "epoch", (long long)s->epoch, "epoch_step", (long long)s->epoch_step,
        "stage", s->stage, "stage_step", (long long)s->stage_step, "ema_updates",
        (long long)s->ema_updates, "seed", (unsigned long long)s->seed, "steps_per_epoch",
        (long long)t->steps_per_epoch, "total_steps", (long long)t->total_steps, "stage1_steps",
        (long long)t->plan.stage_steps[0], "stage2_steps", (long long)t->plan.stage_steps[1],
        "warmup_steps", (long long)t->plan.warmup_steps, "batch_size", t->cfg.batch_size,
        "accumulation_steps", t->cfg.accumulation_steps, "oom_halvings",
        (long long)t->oom_halvings, "oom_last_step", (long long)t->oom_last_step,
        "oom_last_ranks", t->oom_last_ranks, "comm_seconds", t->comm_seconds, "loss_scale",
        s->loss_scale, "loss_scale_good_steps", (long long)s->loss_scale_good_steps,
        "overflow_retries", (long long)t->overflow_retries, "data_wait_seconds",
        t->data_wait_seconds, "prefetch_hits", (long long)hits, "prefetch_misses",
        (long long)misses, "overlapped_buckets", (long long)t->overlapped_buckets);
}

/* inject_oom / inject_overflow(step, times=1): the fault fires in `times` attempts of global
 * step `step` (tests; step -1 cancels). */
static PyObject *set_fault(PyObject *args, cx_trainer_fault *fault, const char *name) {
    long long step, times = 1;
    if (!PyArg_ParseTuple(args, "L|L", &step, &times))
        return NULL;
    if (step < -1 || times < 1) {
        PyErr_Format(PyExc_ValueError, "%s: step must be >= -1 and times >= 1, got %lld and %lld",
                     name, step, times);
        return NULL;
    }
    *fault = (cx_trainer_fault){step, times};
    Py_RETURN_NONE;
}

static PyObject *trainer_inject_overflow(TrainerObject *self, PyObject *args) {
    return ready(self) ? set_fault(args, &self->trainer->overflow_fault, "inject_overflow") : NULL;
}

static PyObject *trainer_inject_oom(TrainerObject *self, PyObject *args) {
    return ready(self) ? set_fault(args, &self->trainer->oom_fault, "inject_oom") : NULL;
}

/* save_state(path, extra: dict[str, str] = None): the training state file, atomically */
static PyObject *trainer_save_state(TrainerObject *self, PyObject *args) {
    PyObject *path_obj, *extra = NULL;
    if (!PyArg_ParseTuple(args, "O&|O!", PyUnicode_FSConverter, &path_obj, &PyDict_Type, &extra))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n_extra;
    const char **keys = NULL, **values = NULL;
    if (cx_py_string_dict(extra, "extra metadata", &n_extra, &keys, &values) < 0 || !ready(self))
        goto done;
    cx_trainer *t = self->trainer;
    const char *path = PyBytes_AS_STRING(path_obj);
    cx_status st = CX_OK;
    cx_train_state host; /* a device trainer's state, copied to the host for the file */
    memset(&host, 0, sizeof host);
    Py_BEGIN_ALLOW_THREADS
    if (t->dev) {
        st = cx_train_state_alloc(&t->model->table, &host);
        if (st == CX_OK)
            st = cx_trainer_host_state(t, &host);
    }
    if (st == CX_OK)
        st = cx_train_state_save(path, &t->model->table, t->dev ? &host : &t->state,
                                 (int)n_extra, keys, values);
    cx_train_state_free(&host);
    Py_END_ALLOW_THREADS
    if (st != CX_OK) {
        cx_py_error(st);
        goto done;
    }
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyMem_Free(keys);
    PyMem_Free(values);
    Py_DECREF(path_obj);
    return result;
}

/* load_state(path) -> metadata dict. The state must belong to this model (parameter names
 * and shapes) and to a run with this trainer's steps per epoch; on failure the trainer's
 * state is left as it was. */
static PyObject *trainer_load_state(TrainerObject *self, PyObject *arg) {
    PyObject *path_obj;
    if (!PyUnicode_FSConverter(arg, &path_obj))
        return NULL;
    PyObject *result = NULL;
    cx_train_state loaded;
    memset(&loaded, 0, sizeof loaded);
    cx_st_file *file = NULL;
    if (!ready(self))
        goto done;
    cx_trainer *t = self->trainer;
    const cx_param_table *table = &t->model->table;
    const char *path = PyBytes_AS_STRING(path_obj);
    cx_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cx_train_state_alloc(table, &loaded);
    if (st == CX_OK)
        st = cx_train_state_load(path, table, &loaded, &file);
    Py_END_ALLOW_THREADS
    if (st != CX_OK) {
        cx_py_error(st);
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    st = cx_trainer_check_state(t, &loaded, path);
    Py_END_ALLOW_THREADS
    if (st != CX_OK) {
        cx_py_error(st);
        goto done;
    }
    if (loaded.seed != t->cfg.seed) {
        PyErr_Format(PyExc_ValueError, "%s: seed differs (file %llu, this run %llu)", path,
                     (unsigned long long)loaded.seed, (unsigned long long)t->cfg.seed);
        goto done;
    }
    PyObject *metadata = PyDict_New();
    if (!metadata)
        goto done;
    for (int k = 0; k < file->n_metadata; k++) {
        PyObject *v = PyUnicode_FromString(file->metadata_values[k]);
        if (!v || PyDict_SetItemString(metadata, file->metadata_keys[k], v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(metadata);
            goto done;
        }
        Py_DECREF(v);
    }
    /* CPU: swap the buffers in (the old ones are freed with `loaded`); device: upload */
    Py_BEGIN_ALLOW_THREADS
    st = cx_trainer_install_state(t, &loaded);
    Py_END_ALLOW_THREADS
    if (st != CX_OK) {
        Py_DECREF(metadata);
        cx_py_error(st);
        goto done;
    }
    result = metadata;
done:
    cx_train_state_free(&loaded);
    cx_st_close(file);
    Py_DECREF(path_obj);
    return result;
}

/* Trainer.permutation(seed, epoch, n) -> int64 [n]: the epoch's row order */
/* set_comm(comm): joins the data-parallel run (broadcasts rank 0's weights) */
static PyObject *trainer_set_comm(TrainerObject *self, PyObject *comm_obj) {
    if (!ready(self))
        return NULL;
    cx_comm *comm = cx_py_comm(comm_obj);
    if (!comm)
        return NULL;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "the trainer is running");
        return NULL;
    }
    cx_status st;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    st = cx_trainer_set_comm(self->trainer, comm);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (st != CX_OK)
        return cx_py_error(st);
    Py_INCREF(comm_obj);
    Py_XSETREF(self->comm_obj, comm_obj);
    Py_RETURN_NONE;
}

static PyObject *trainer_permutation(PyObject *unused, PyObject *args) {
    unsigned long long seed, epoch;
    long long n;
    if (!PyArg_ParseTuple(args, "KKL", &seed, &epoch, &n))
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "n must be >= 0");
        return NULL;
    }
    npy_intp dims[1] = {(npy_intp)n};
    PyObject *arr = PyArray_EMPTY(1, dims, NPY_INT64, 0);
    if (arr)
        cx_trainer_permutation(seed, epoch, n, PyArray_DATA((PyArrayObject *)arr));
    return arr;
}

static PyMethodDef trainer_methods[] = {
    {"run_epoch", (PyCFunction)(void (*)(void))trainer_run_epoch, METH_VARARGS | METH_KEYWORDS,
     "run_epoch(images, masks, step_loss=None, step_lr=None, max_steps=-1) -> steps run: the "
     "rest of the current epoch in C (GIL released); per-step loss / head lr into the float64 "
     "arrays at the epoch-step index."},
    {"step_on_batch", (PyCFunction)trainer_step_on_batch, METH_VARARGS,
     "step_on_batch(x, y) -> dict: one optimizer step on a fixed batch of batch_size x "
     "accumulation_steps rows (no augmentation)."},
    {"last_step", (PyCFunction)trainer_last_step, METH_NOARGS,
     "The last step's loss, lr_head, lr_backbone, grad_norm, ema_decay, stage."},
    {"ema", (PyCFunction)trainer_ema, METH_NOARGS,
     "1-D float32 view of the EMA weights (a CUDA model's trainer: a host copy)."},
    {"exp_avg", (PyCFunction)trainer_exp_avg, METH_NOARGS,
     "1-D float32 view of AdamW's m (a CUDA model's trainer: a host copy)."},
    {"exp_avg_sq", (PyCFunction)trainer_exp_avg_sq, METH_NOARGS,
     "1-D float32 view of AdamW's v (a CUDA model's trainer: a host copy)."},
    {"param_steps", (PyCFunction)trainer_param_steps, METH_NOARGS,
     "int64 view of the per-parameter AdamW step counts (a CUDA model's trainer: a copy)."},
    {"backend", (PyCFunction)trainer_backend, METH_NOARGS,
     "'cpu', or 'cuda' when the model's backend is CUDA (optimizer state on the device)."},
    {"state", (PyCFunction)trainer_state, METH_NOARGS,
     "Run position and plan as a dict (with the current micro-batch split and the "
     "out-of-memory halvings)."},
    {"inject_overflow", (PyCFunction)trainer_inject_overflow, METH_VARARGS,
     "inject_overflow(step, times=1): an infinity in step's first trained gradient, in "
     "`times` attempts of it (tests)."},
    {"inject_oom", (PyCFunction)trainer_inject_oom, METH_VARARGS,
     "inject_oom(step, times=1): step's first micro-batch reports out-of-memory, in `times` "
     "attempts of it (tests)."},
    {"save_state", (PyCFunction)trainer_save_state, METH_VARARGS,
     "save_state(path, extra=None): the training state, atomically (extra: str metadata)."},
    {"load_state", (PyCFunction)trainer_load_state, METH_O,
     "load_state(path) -> metadata dict: continue a run from a saved state."},
    {"set_comm", (PyCFunction)trainer_set_comm, METH_O,
     "set_comm(comm: ShmComm): join a data-parallel run of world_size ranks (broadcasts rank "
     "0's weights; call before the first step)."},
    {"permutation", (PyCFunction)trainer_permutation, METH_VARARGS | METH_STATIC,
     "permutation(seed, epoch, n) -> int64 [n]: the row order of an epoch."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TrainerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "codext._C.Trainer",
    .tp_basicsize = sizeof(TrainerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Trainer(model, n_train, height, width, *, batch_size, accumulation_steps, epochs, "
              "stage1_epochs, scheduler, lr, stage2_lr, backbone_lr_mult, warmup_epochs, "
              "min_lr, weight_decay, betas, eps, grad_clip, ema_decay, seed, augment, world_size=1, "
              "rank=0, loss_scaling=False, loss_scale_init=65536.0, "
              "loss_scale_growth_interval=2000, gradient_checkpointing=False, prefetch=-1, "
              "overlap_comm=True, bucket_floats=0): the C training "
              "loop over a _C.CODModel (on a backend='cuda' model the optimizer state lives "
              "on the device; ema() and the like return host copies).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)trainer_init,
    .tp_dealloc = (destructor)trainer_dealloc,
    .tp_methods = trainer_methods,
};

int cx_py_add_trainer_type(PyObject *module) {
    if (PyType_Ready(&TrainerType) < 0)
        return -1;
    Py_INCREF(&TrainerType);
    if (PyModule_AddObject(module, "Trainer", (PyObject *)&TrainerType) < 0) {
        Py_DECREF(&TrainerType);
        return -1;
    }
    return 0;
}
