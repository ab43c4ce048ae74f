/* Python types for the models: _C.Backbone (wrapped by codext.Backbone). */
#include "model_binding.h"
#include "../model/backbone.h"

#include <structmember.h>

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

typedef struct {
    PyObject_HEAD
    cx_backbone *bb;
} BackboneObject;

static int backbone_init(BackboneObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"config", "seed", NULL};
    const char *config;
    unsigned long long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|K", keywords, &config, &seed))
        return -1;
    if (self->bb) {
        cx_backbone_free(self->bb);
        self->bb = NULL;
    }
    cx_status st = cx_backbone_create(config, seed, cx_backend_cpu(), &self->bb);
    if (st != CX_OK) {
        cx_py_error(st);
        return -1;
    }
    return 0;
}

static void backbone_dealloc(BackboneObject *self) {
    cx_backbone_free(self->bb);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *backbone_params(BackboneObject *self, PyObject *unused) {
    return cx_py_view((PyObject *)self, self->bb->params, self->bb->table.total, NPY_FLOAT32);
}

static PyObject *backbone_grads(BackboneObject *self, PyObject *unused) {
    return cx_py_view((PyObject *)self, self->bb->grads, self->bb->table.total, NPY_FLOAT32);
}

static PyObject *backbone_param_table(BackboneObject *self, PyObject *unused) {
    return cx_py_param_table(&self->bb->table);
}

static PyObject *backbone_config(BackboneObject *self, PyObject *unused) {
    const cx_edgenext_config *c = &self->bb->net.cfg;
    return Py_BuildValue("{s:s, s:(iiii), s:(iiii), s:i, s:(iiii), s:(iiii)}", "name", c->name,
                         "depths", c->depths[0], c->depths[1], c->depths[2], c->depths[3],
                         "dims", c->dims[0], c->dims[1], c->dims[2], c->dims[3], "heads",
                         c->heads, "kernel_sizes", c->kernel_sizes[0], c->kernel_sizes[1],
                         c->kernel_sizes[2], c->kernel_sizes[3], "d2_scales", c->d2_scales[0],
                         c->d2_scales[1], c->d2_scales[2], c->d2_scales[3]);
}

static PyArrayObject *as_input(PyObject *obj, const char *what, int ndim) {
    PyArrayObject *arr = cx_py_as_float32(obj, what);
    if (arr && PyArray_NDIM(arr) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must have rank %d, got %d", what, ndim,
                     PyArray_NDIM(arr));
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

static PyObject *backbone_forward(BackboneObject *self, PyObject *arg) {
    PyArrayObject *x = as_input(arg, "x", 4);
    if (!x)
        return NULL;
    int B = (int)PyArray_DIM(x, 0), C = (int)PyArray_DIM(x, 1);
    int H = (int)PyArray_DIM(x, 2), W = (int)PyArray_DIM(x, 3);
    cx_status st = cx_edgenext_check_input(&self->bb->net, B, C, H, W);
    if (st == CX_OK) {
        Py_BEGIN_ALLOW_THREADS
        st = cx_backbone_forward(self->bb, PyArray_DATA(x), B, H, W);
        Py_END_ALLOW_THREADS
    }
    Py_DECREF(x);
    if (st != CX_OK)
        return cx_py_error(st);
    const cx_edgenext *net = &self->bb->net;
    PyObject *out = PyList_New(4);
    if (!out)
        return NULL;
    for (int s = 0; s < 4; s++) {
        npy_intp dims[4] = {B, net->cfg.dims[s], H >> (s + 2), W >> (s + 2)};
        PyObject *f = PyArray_EMPTY(4, dims, NPY_FLOAT32, 0);
        if (!f) {
            Py_DECREF(out);
            return NULL;
        }
        self->bb->be->download(self->bb->be, PyArray_DATA((PyArrayObject *)f), net->features[s],
                               (size_t)PyArray_SIZE((PyArrayObject *)f));
        PyList_SET_ITEM(out, s, f);
    }
    st = self->bb->be->sync(self->bb->be);
    if (st != CX_OK) {
        Py_DECREF(out);
        return cx_py_error(st);
    }
    return out;
}

static PyObject *backbone_backward(BackboneObject *self, PyObject *arg) {
    const cx_edgenext *net = &self->bb->net;
    if (!self->bb->have_forward) {
        PyErr_SetString(PyExc_RuntimeError, "backward() needs a forward() first (each backward consumes it)");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(arg, "dfeatures must be a sequence of 4 arrays");
    if (!seq)
        return NULL;
    PyArrayObject *held[4] = {0};
    PyObject *result = NULL;
    if (PySequence_Fast_GET_SIZE(seq) != 4) {
        PyErr_Format(PyExc_ValueError, "dfeatures must hold 4 arrays (one per stage), got %zd",
                     PySequence_Fast_GET_SIZE(seq));
        goto done;
    }
    const float *dfeat[4];
    int B = net->batch, H = net->height, W = net->width;
    for (int s = 0; s < 4; s++) {
        char what[32];
        snprintf(what, sizeof what, "dfeatures[%d]", s);
        held[s] = as_input(PySequence_Fast_GET_ITEM(seq, s), what, 4);
        if (!held[s])
            goto done;
        npy_intp want[4] = {B, net->cfg.dims[s], H >> (s + 2), W >> (s + 2)};
        for (int d = 0; d < 4; d++) {
            if (PyArray_DIM(held[s], d) != want[d]) {
                PyErr_Format(PyExc_ValueError,
                             "%s has shape (%zd, %zd, %zd, %zd), expected (%zd, %zd, %zd, %zd)",
                             what, PyArray_DIM(held[s], 0), PyArray_DIM(held[s], 1),
                             PyArray_DIM(held[s], 2), PyArray_DIM(held[s], 3), want[0],
                             want[1], want[2], want[3]);
                goto done;
            }
        }
        dfeat[s] = PyArray_DATA(held[s]);
    }
    npy_intp dims[4] = {B, 3, H, W};
    PyObject *dx = PyArray_EMPTY(4, dims, NPY_FLOAT32, 0);
    if (!dx)
        goto done;
    cx_status st;
    Py_BEGIN_ALLOW_THREADS
    st = cx_backbone_backward(self->bb, dfeat, PyArray_DATA((PyArrayObject *)dx));
    Py_END_ALLOW_THREADS
    if (st != CX_OK) {
        Py_DECREF(dx);
        cx_py_error(st);
        goto done;
    }
    result = dx;
done:
    for (int s = 0; s < 4; s++)
        Py_XDECREF(held[s]);
    Py_DECREF(seq);
    return result;
}

static PyObject *backbone_arena_bytes(BackboneObject *self, PyObject *unused) {
    return PyLong_FromSize_t(cx_backbone_arena_bytes(self->bb));
}

static PyMethodDef backbone_methods[] = {
    {"params", (PyCFunction)backbone_params, METH_NOARGS, "1-D float32 view of the parameter buffer."},
    {"grads", (PyCFunction)backbone_grads, METH_NOARGS, "1-D float32 view of the gradient buffer."},
    {"param_table", (PyCFunction)backbone_param_table, METH_NOARGS, "[(name, shape, offset, decay)] in buffer order."},
    {"config", (PyCFunction)backbone_config, METH_NOARGS, "The architecture as a dict."},
    {"forward", (PyCFunction)backbone_forward, METH_O, "forward(x [B,3,H,W] float32) -> 4 feature maps."},
    {"backward", (PyCFunction)backbone_backward, METH_O, "backward(dfeatures) -> dx; fills grads()."},
    {"arena_bytes", (PyCFunction)backbone_arena_bytes, METH_NOARGS, "Planned activation memory."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject BackboneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "codext._C.Backbone",
    .tp_basicsize = sizeof(BackboneObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Backbone(config, seed=0): native EdgeNeXt with timm parameter names.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)backbone_init,
    .tp_dealloc = (destructor)backbone_dealloc,
    .tp_methods = backbone_methods,
};

int cx_py_add_backbone_type(PyObject *module) {
    if (PyType_Ready(&BackboneType) < 0)
        return -1;
    Py_INCREF(&BackboneType);
    if (PyModule_AddObject(module, "Backbone", (PyObject *)&BackboneType) < 0) {
        Py_DECREF(&BackboneType);
        return -1;
    }
    return 0;
}
