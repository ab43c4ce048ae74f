/* codext._testing: the allocator's fault-injection hook of core/memory.c (compiled into
 * _C only in the test build, CX_TEST_BUILD).
 *
 *   _testing.test_alloc_fail_at(n)  the n-th engine allocation from now fails (0: none)
 *   _testing.test_alloc_count()     engine allocations since the last test_alloc_fail_at
 *   _testing.test_alloc_live()      engine blocks not yet freed (scratch excluded)
 *   _testing.test_scratch_release() frees the calling thread's scratch buffers, so that the
 *                             next run allocates (and can fail to allocate) them again */
#define PY_SSIZE_T_CLEAN
#define PY_ARRAY_UNIQUE_SYMBOL codext_testing_ARRAY_API /* module.c's table */
#define NO_IMPORT_ARRAY
#include "../python/binding.h"

static PyObject *py_test_alloc_fail_at(PyObject *self, PyObject *arg) {
    long long n = PyLong_AsLongLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "test_alloc_fail_at: n must be >= 0, got %lld", n);
        return NULL;
    }
    cx_test_alloc_fail_at(n);
    Py_RETURN_NONE;
}

static PyObject *py_test_alloc_count(PyObject *self, PyObject *unused) {
    return PyLong_FromLongLong(cx_test_alloc_count());
}

static PyObject *py_test_alloc_live(PyObject *self, PyObject *unused) {
    return PyLong_FromLongLong(cx_test_alloc_live());
}

static PyObject *py_test_scratch_release(PyObject *self, PyObject *unused) {
    cx_scratch_release();
    Py_RETURN_NONE;
}

PyMethodDef cx_test_alloc_methods[] = {
    {"test_alloc_fail_at", py_test_alloc_fail_at, METH_O,
     "test_alloc_fail_at(n): the n-th engine allocation from now fails (0: none). Test builds only."},
    {"test_alloc_count", py_test_alloc_count, METH_NOARGS,
     "Engine allocations since the last test_alloc_fail_at. Test builds only."},
    {"test_alloc_live", py_test_alloc_live, METH_NOARGS,
     "Engine allocations not yet freed (scratch buffers excluded). Test builds only."},
    {"test_scratch_release", py_test_scratch_release, METH_NOARGS,
     "Frees the calling thread's scratch buffers. Test builds only."},
    {NULL, NULL, 0, NULL},
};
