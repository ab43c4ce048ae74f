/* codext._testing: what only the tests call, built only when CODEXT_TEST_BUILD=1 and never
 * shipped. It holds no copy of the engine: it is linked against codext._C (which a test
 * build compiles with its symbols visible) and calls the engine there, so both modules
 * share one thread pool, one allocator and one error state.
 *
 *   op(name, inputs, iargs=(), fargs=(), backward=False, backend="cpu", unsupported=(),
 *      precision="fp32")
 *       -> [arrays]: one entry of the op-test runner (op_runner.h: the calling convention)
 *       on the backend ("cpu" with the `unsupported` ops refused, or "cuda")
 *   op_names(), op_info(name)       the runner's entries and what each returns and calls
 *   table_ops()                     the op table (ops/op_list.h), in order
 *   backend_supports(backend)       {op: supported} for "cpu" or "cuda"
 *   bind_model(kind, ..., backend="cpu", unsupported=())
 *       binds a model ("cod" or "backbone") to a backend (the CPU one with `unsupported`
 *       ops refused, or the CUDA one) and frees it: raises what the binding raises
 *   test_skip_recompute(flag)       backward after a checkpointed forward skips the recompute
 *       (model/edgenext.h): the wrong path a checkpointing test must catch
 *   and the training arithmetic of train_binding.c (adamw_step, schedule_lr, ...), the
 *   allocator's fault-injection hook (alloc_hooks.c: test_alloc_fail_at, ...) and the
 *   JSON reader on bytes (io_testing.c: _json_parse), and leaf functions checked against
 *   other implementations (leaf_testing.c: augment_params, metrics_edt, hmac_sha256). */
#define PY_SSIZE_T_CLEAN
/* This module's own table of NumPy's C API (NumPy keeps each module's table private). */
#define PY_ARRAY_UNIQUE_SYMBOL codext_testing_ARRAY_API
#include "../python/binding.h"
#include "../ops/cuda_loader.h"
#include "../model/backbone.h"
#include "../model/cod.h"
#include "op_runner.h"

#include <string.h>

extern PyMethodDef cx_test_train_methods[]; /* train_binding.c */
extern PyMethodDef cx_test_alloc_methods[]; /* alloc_hooks.c */
extern PyMethodDef cx_test_io_methods[];    /* io_testing.c */
extern PyMethodDef cx_test_leaf_methods[];  /* leaf_testing.c */

/* "cpu" or "cuda" -> a backend; NULL with an exception set. */
static cx_backend *backend_named(const char *name) {
    if (!name || strcmp(name, "cpu") == 0)
        return cx_backend_cpu();
    if (strcmp(name, "cuda") == 0) {
        cx_backend *be = NULL;
        cx_status st;
        Py_BEGIN_ALLOW_THREADS
        st = cx_cuda_shared_backend(&be);
        Py_END_ALLOW_THREADS
        if (st != CX_OK) {
            cx_py_error(st);
            return NULL;
        }
        return be;
    }
    PyErr_Format(PyExc_ValueError, "backend must be 'cpu' or 'cuda', got '%s'", name);
    return NULL;
}

/* ---- a backend that refuses some ops (a stand-in for one that lacks them) ---------------- */

/* The CPU backend refusing the ops in its impl (a cx_op_set): a stand-in for a backend
 * that lacks ops. */
static int refusing_supports(const cx_backend *be, cx_op_id op) {
    const cx_op_set *refused = be->impl;
    return op >= 0 && op < CX_OP_COUNT && !refused->has[op];
}

/* `be` with the ops named in `unsupported` (None: none) refused, in *refusing (which keeps
 * its refused set in *refused); returns the backend to use, or NULL with an exception. */
static cx_backend *refusing_backend(cx_backend *be, PyObject *unsupported, cx_op_set *refused,
                                    cx_backend *refusing) {
    memset(refused, 0, sizeof *refused);
    if (!unsupported || unsupported == Py_None)
        return be;
    if (be != cx_backend_cpu()) {
        PyErr_SetString(PyExc_ValueError, "unsupported= applies to the CPU backend only");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(unsupported, "unsupported must be a list of op names");
    if (!seq)
        return NULL;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        const char *op = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(seq, i));
        int found = 0;
        for (int k = 0; op && k < CX_OP_COUNT; k++)
            if (strcmp(op, cx_op_name((cx_op_id)k)) == 0)
                refused->has[k] = found = 1;
        if (!found) {
            Py_DECREF(seq);
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_KeyError, "no table op named '%s'", op);
            return NULL;
        }
    }
    Py_DECREF(seq);
    *refusing = *be;
    refusing->impl = refused;
    refusing->supports = refusing_supports;
    return refusing;
}

/* ---- op(): one runner entry ------------------------------------------------------------ */

typedef struct {
    PyObject *outputs; /* list */
} op_binding;

static float *op_alloc_out(cx_op_call *call, int index, int ndim, const int64_t *shape) {
    op_binding *b = call->binding;
    /* Called with the GIL released: take it for the allocation. */
    PyGILState_STATE gil = PyGILState_Ensure();
    float *data = NULL;
    if (index == PyList_GET_SIZE(b->outputs) && ndim >= 0 && ndim <= CX_RUN_MAX_DIMS) {
        npy_intp dims[CX_RUN_MAX_DIMS];
        for (int d = 0; d < ndim; d++)
            dims[d] = (npy_intp)shape[d];
        PyObject *arr = PyArray_ZEROS(ndim, dims, NPY_FLOAT32, 0);
        if (arr) {
            if (PyList_Append(b->outputs, arr) == 0)
                data = (float *)PyArray_DATA((PyArrayObject *)arr);
            Py_DECREF(arr);
        }
        PyErr_Clear(); /* reported as CX_ENOMEM by the runner */
    }
    PyGILState_Release(gil);
    return data;
}

/* Reads a sequence of numbers into out[] (at most CX_RUN_MAX_ARGS); -1 with an exception. */
static int parse_numbers(PyObject *obj, const char *what, int is_int, int64_t *iout,
                         double *fout, int *n) {
    *n = 0;
    if (!obj || obj == Py_None)
        return 0;
    PyObject *seq = PySequence_Fast(obj, what);
    if (!seq)
        return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    if (count > CX_RUN_MAX_ARGS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "at most %d %s", CX_RUN_MAX_ARGS, what);
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (is_int)
            iout[i] = PyLong_AsLongLong(item);
        else
            fout[i] = PyFloat_AsDouble(item);
    }
    Py_DECREF(seq);
    if (PyErr_Occurred())
        return -1;
    *n = (int)count;
    return 0;
}

static PyObject *py_op(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *keywords[] = {"name", "inputs", "iargs", "fargs", "backward", "backend",
                               "unsupported", "precision", NULL};
    const char *name, *backend_name = "cpu", *precision_name = "fp32";
    PyObject *inputs, *iargs = NULL, *fargs = NULL, *unsupported = NULL;
    int backward = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sO|OOpsOs", keywords, &name, &inputs, &iargs,
                                     &fargs, &backward, &backend_name, &unsupported,
                                     &precision_name))
        return NULL;
    int precision = cx_precision_from_name(precision_name);
    if (precision < 0)
        return PyErr_Format(PyExc_ValueError, "precision must be 'fp32', 'fp16' or 'bf16', got "
                            "'%s'", precision_name);
    if (precision != CX_PRECISION_FP32 && strcmp(backend_name, "cuda") != 0)
        return PyErr_Format(PyExc_ValueError, "precision '%s' is the CUDA backend's (the CPU "
                            "backend computes in fp32)", precision_name);
    cx_op_set refused;
    cx_backend refusing;
    cx_backend *backend = backend_named(backend_name);
    if (backend)
        backend = refusing_backend(backend, unsupported, &refused, &refusing);
    if (!backend)
        return NULL;
    PyObject *in_seq = PySequence_Fast(inputs, "inputs must be a sequence of arrays");
    if (!in_seq)
        return NULL;
    cx_op_call call;
    memset(&call, 0, sizeof call);
    PyArrayObject *held[CX_RUN_MAX_TENSORS] = {0};
    PyObject *result = NULL;
    op_binding binding = {PyList_New(0)};
    if (!binding.outputs)
        goto done;
    Py_ssize_t n_in = PySequence_Fast_GET_SIZE(in_seq);
    if (n_in > CX_RUN_MAX_TENSORS) {
        PyErr_Format(PyExc_ValueError, "at most %d inputs", CX_RUN_MAX_TENSORS);
        goto done;
    }
    call.n_in = (int)n_in;
    for (Py_ssize_t i = 0; i < n_in; i++) {
        held[i] = cx_py_as_float32(PySequence_Fast_GET_ITEM(in_seq, i), "op input");
        if (!held[i])
            goto done;
        if (PyArray_NDIM(held[i]) > CX_RUN_MAX_DIMS) {
            PyErr_Format(PyExc_ValueError, "input %zd has more than %d dims", i, CX_RUN_MAX_DIMS);
            goto done;
        }
        call.in[i] = PyArray_DATA(held[i]);
        call.in_ndim[i] = PyArray_NDIM(held[i]);
        for (int d = 0; d < call.in_ndim[i]; d++)
            call.in_shape[i][d] = PyArray_DIM(held[i], d);
    }
    if (parse_numbers(iargs, "integer arguments", 1, call.iargs, NULL, &call.n_iargs) < 0 ||
        parse_numbers(fargs, "float arguments", 0, NULL, call.fargs, &call.n_fargs) < 0)
        goto done;
    call.backward = backward;
    call.alloc_out = op_alloc_out;
    call.binding = &binding;
    cx_status st;
    Py_BEGIN_ALLOW_THREADS
    /* the shared backend runs this call in `precision`, then returns to fp32 */
    st = precision != CX_PRECISION_FP32 ? cx_cuda_backend_set_precision(backend, precision)
                                        : CX_OK;
    if (st == CX_OK)
        st = cx_op_runner_run(backend, name, &call);
    if (precision != CX_PRECISION_FP32) {
        if (st == CX_OK)
            st = cx_cuda_backend_set_precision(backend, CX_PRECISION_FP32);
        else
            cx_cuda_backend_set_precision(backend, CX_PRECISION_FP32); /* keeps the first error */
    }
    Py_END_ALLOW_THREADS
    if (st != CX_OK) {
        cx_py_error(st);
        goto done;
    }
    result = binding.outputs;
    binding.outputs = NULL;
done:
    for (int i = 0; i < CX_RUN_MAX_TENSORS; i++)
        Py_XDECREF(held[i]);
    Py_XDECREF(binding.outputs);
    Py_DECREF(in_seq);
    return result;
}

/* ---- what the runner and the table hold ------------------------------------------------ */

static void append_name(const cx_op_entry *entry, void *ctx) {
    PyObject *s = PyUnicode_FromString(entry->name);
    if (s) {
        PyList_Append((PyObject *)ctx, s);
        Py_DECREF(s);
    }
}

static PyObject *py_op_names(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    PyObject *names = PyList_New(0);
    if (names)
        cx_op_runner_each(append_name, names);
    if (PyErr_Occurred()) {
        Py_XDECREF(names);
        return NULL;
    }
    return names;
}

/* [names of the table ops in `ops`] */
static PyObject *op_list(uint64_t ops) {
    PyObject *list = PyList_New(0);
    for (int op = 0; list && op < CX_OP_COUNT; op++) {
        if (!((ops >> op) & 1))
            continue;
        PyObject *s = PyUnicode_FromString(cx_op_name((cx_op_id)op));
        if (!s || PyList_Append(list, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(s);
    }
    return list;
}

static PyObject *py_op_info(PyObject *self, PyObject *arg) {
    (void)self;
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name)
        return NULL;
    const cx_op_entry *e = cx_op_runner_find(name);
    if (!e) {
        PyErr_Format(PyExc_KeyError, "no op-test entry named '%s'", name);
        return NULL;
    }
    return Py_BuildValue("{s:i,s:O,s:O,s:i,s:i,s:N,s:N,s:O}", "outputs", e->n_outputs,
                         "saved", e->has_saved ? Py_True : Py_False,
                         "backward", e->backward_ops ? Py_True : Py_False,
                         "min_inputs", e->min_inputs, "max_inputs", e->max_inputs,
                         "forward_ops", op_list(e->forward_ops),
                         "backward_ops", op_list(e->backward_ops),
                         "cpu_internal", e->cpu_internal ? Py_True : Py_False);
}

static PyObject *py_table_ops(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    return op_list(~(uint64_t)0);
}

static PyObject *py_backend_supports(PyObject *self, PyObject *args) {
    (void)self;
    const char *name = "cpu";
    if (!PyArg_ParseTuple(args, "|s", &name))
        return NULL;
    cx_backend *be = backend_named(name);
    if (!be)
        return NULL;
    PyObject *dict = PyDict_New();
    for (int op = 0; dict && op < CX_OP_COUNT; op++) {
        if (PyDict_SetItemString(dict, cx_op_name((cx_op_id)op),
                                 be->supports(be, (cx_op_id)op) ? Py_True : Py_False) < 0) {
            Py_DECREF(dict);
            return NULL;
        }
    }
    return dict;
}

/* ---- binding a model to a backend ------------------------------------------------------ */

static PyObject *py_bind_model(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *keywords[] = {"kind", "backbone", "decoder_dim", "num_experts", "moe_top_k",
                               "backend", "unsupported", NULL};
    const char *kind, *backbone = "edgenext_tiny_test", *backend_name = "cpu";
    int decoder_dim = 16, num_experts = 7, top_k = 0;
    PyObject *unsupported = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|siiisO", keywords, &kind, &backbone,
                                     &decoder_dim, &num_experts, &top_k, &backend_name,
                                     &unsupported))
        return NULL;
    cx_backend *be = backend_named(backend_name);
    if (!be)
        return NULL;
    cx_op_set refused;
    cx_backend refusing;
    be = refusing_backend(be, unsupported, &refused, &refusing);
    if (!be)
        return NULL;
    cx_status st = CX_OK;
    if (strcmp(kind, "cod") == 0) {
        cx_cod_config cfg = {.decoder_dim = decoder_dim, .num_experts = num_experts,
                             .top_k = top_k, .ds_weight = 0.5f, .balance_weight = 0.01f};
        if (strlen(backbone) >= sizeof cfg.backbone) {
            PyErr_Format(PyExc_ValueError, "unknown backbone '%s'", backbone);
            return NULL;
        }
        strcpy(cfg.backbone, backbone);
        cx_cod_model *m = NULL;
        Py_BEGIN_ALLOW_THREADS
        st = cx_cod_create(&cfg, 0, be, &m);
        cx_cod_free(m);
        Py_END_ALLOW_THREADS
    } else if (strcmp(kind, "backbone") == 0) {
        cx_backbone *bb = NULL;
        Py_BEGIN_ALLOW_THREADS
        st = cx_backbone_create(backbone, 0, be, &bb);
        cx_backbone_free(bb);
        Py_END_ALLOW_THREADS
    } else {
        PyErr_Format(PyExc_ValueError, "kind must be 'cod' or 'backbone', got '%s'", kind);
        return NULL;
    }
    if (st != CX_OK)
        return cx_py_error(st);
    Py_RETURN_NONE;
}

static PyObject *py_test_skip_recompute(PyObject *self, PyObject *arg) {
    (void)self;
    int flag = PyObject_IsTrue(arg);
    if (flag < 0)
        return NULL;
    cx_edgenext_test_skip_recompute = flag;
    Py_RETURN_NONE;
}

/* ---- module ------------------------------------------------------------------------------ */

static PyMethodDef module_methods[] = {
    {"op", (PyCFunction)(void (*)(void))py_op, METH_VARARGS | METH_KEYWORDS,
     "op(name, inputs, iargs=(), fargs=(), backward=False, backend='cpu', unsupported=(), "
     "precision='fp32') -> "
     "list of float32 "
     "arrays: forward -> outputs then saved state; backward (inputs, output gradients, "
     "optional starting gradients) -> one gradient per input."},
    {"op_names", py_op_names, METH_NOARGS, "Names of the op-test runner's entries."},
    {"op_info", py_op_info, METH_O,
     "op_info(name) -> dict: outputs, saved, backward, min_inputs, max_inputs, forward_ops, "
     "backward_ops, cpu_internal."},
    {"table_ops", py_table_ops, METH_NOARGS, "The op table's ops, in order."},
    {"backend_supports", py_backend_supports, METH_VARARGS,
     "backend_supports(backend='cpu') -> {op: bool}."},
    {"bind_model", (PyCFunction)(void (*)(void))py_bind_model, METH_VARARGS | METH_KEYWORDS,
     "bind_model(kind, backbone='edgenext_tiny_test', decoder_dim=16, num_experts=7, "
     "moe_top_k=0, backend='cpu', unsupported=()): creates and frees the model on the "
     "backend; raises what the binding raises."},
    {"test_skip_recompute", py_test_skip_recompute, METH_O,
     "test_skip_recompute(flag): backward after a checkpointed forward skips the recompute "
     "(reads stale activations). Test builds only."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "codext._testing",
    .m_doc = "Test-only access to codext's engine (test builds only; never shipped).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__testing(void) {
    import_array();
    /* The engine's bindings (cx_py_error, ...) live in _C: make sure it is initialised. */
    PyObject *engine = PyImport_ImportModule("codext._C");
    if (!engine)
        return NULL;
    Py_DECREF(engine);
    PyObject *module = PyModule_Create(&module_def);
    if (!module)
        return NULL;
    if (PyModule_AddFunctions(module, cx_test_train_methods) < 0 ||
        PyModule_AddFunctions(module, cx_test_alloc_methods) < 0 ||
        PyModule_AddFunctions(module, cx_test_io_methods) < 0 ||
        PyModule_AddFunctions(module, cx_test_leaf_methods) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
