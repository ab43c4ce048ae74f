/* codext._testing: entry points into csrc/io for the tests:
 *
 * _json_parse(data: bytes, max_values: int = 0) -> object
 *   Parses data with the C JSON reader (cx_json_parse) and returns the tree as Python
 *   objects: null/true/false -> None/True/False, strings -> str, arrays -> list, objects
 *   -> dict in text order, integers (no fraction or exponent, |value| < 2^64) -> int, and
 *   every other number -> ("number", its text), since the reader keeps no value for
 *   them. A refused text raises ValueError("at byte N: message"); MemoryError when memory
 *   runs out. tests/test_json_differential.py compares this with Python's json.
 *
 * _json_string_poke(data: bytes, offset: int) -> None
 *   Parses data, which must be one JSON string, and writes one byte at offset `offset` of
 *   the decoded string's arena allocation (length + 1 bytes with its NUL; offset at most
 *   length + 1, the first byte past it). Under CX_SANITIZE the arena poisons what follows
 *   each allocation, so offset length + 1 must end the process with an ASan report
 *   (tests/test_fuzz_python.py plants it in a subprocess); offset length (the NUL) is a
 *   legal write.
 *
 * _sanitized() -> bool: whether this build defines CX_SANITIZE. */
#define PY_SSIZE_T_CLEAN
#define PY_ARRAY_UNIQUE_SYMBOL codext_testing_ARRAY_API /* module.c's table */
#define NO_IMPORT_ARRAY
#include "../python/binding.h"
#include "../io/json.h"

#include <string.h>

/* Length of the number token at text[pos] (the reader validated it already). */
static size_t number_length(const char *text, size_t length, size_t pos) {
    size_t end = pos;
    while (end < length && text[end] && strchr("+-.eE0123456789", text[end]))
        end++;
    return end - pos;
}

static PyObject *to_python(const cx_json_value *v, const char *text, size_t length) {
    switch (v->kind) {
    case CX_JSON_NULL: Py_RETURN_NONE;
    case CX_JSON_TRUE: Py_RETURN_TRUE;
    case CX_JSON_FALSE: Py_RETURN_FALSE;
    case CX_JSON_NUMBER: {
        if (v->is_integer) {
            PyObject *magnitude = PyLong_FromUnsignedLongLong(v->u.magnitude);
            if (!magnitude || !v->negative)
                return magnitude;
            PyObject *negated = PyNumber_Negative(magnitude);
            Py_DECREF(magnitude);
            return negated;
        }
        return Py_BuildValue("(sy#)", "number", text + v->pos,
                             (Py_ssize_t)number_length(text, length, v->pos));
    }
    case CX_JSON_STRING:
        return PyUnicode_DecodeUTF8(v->u.string.chars, (Py_ssize_t)v->u.string.length, "strict");
    case CX_JSON_ARRAY: {
        PyObject *list = PyList_New(0);
        for (const cx_json_value *m = v->u.items.first; list && m; m = m->next) {
            PyObject *item = to_python(m, text, length);
            if (!item || PyList_Append(list, item) < 0)
                Py_CLEAR(list);
            Py_XDECREF(item);
        }
        return list;
    }
    case CX_JSON_OBJECT: {
        PyObject *dict = PyDict_New();
        for (const cx_json_value *m = v->u.items.first; dict && m; m = m->next) {
            PyObject *item = to_python(m, text, length);
            if (!item || PyDict_SetItemString(dict, m->key, item) < 0)
                Py_CLEAR(dict);
            Py_XDECREF(item);
        }
        return dict;
    }
    default:
        PyErr_SetString(PyExc_RuntimeError, "unknown JSON value kind");
        return NULL;
    }
}

static PyObject *py_json_parse(PyObject *self, PyObject *args) {
    (void)self;
    const char *text;
    Py_ssize_t length;
    Py_ssize_t max_values = 0;
    if (!PyArg_ParseTuple(args, "y#|n", &text, &length, &max_values))
        return NULL;
    if (max_values < 0) {
        PyErr_SetString(PyExc_ValueError, "max_values must be >= 0");
        return NULL;
    }
    cx_json_error error;
    cx_json_doc *doc = cx_json_parse(text, (size_t)length, (size_t)max_values, &error);
    if (!doc) {
        if (error.pos == (size_t)-1)
            return PyErr_NoMemory();
        return PyErr_Format(PyExc_ValueError, "at byte %zu: %s", error.pos, error.message);
    }
    PyObject *result = to_python(cx_json_root(doc), text, (size_t)length);
    cx_json_free(doc);
    return result;
}

static PyObject *py_json_string_poke(PyObject *self, PyObject *args) {
    (void)self;
    const char *text;
    Py_ssize_t length, offset;
    if (!PyArg_ParseTuple(args, "y#n", &text, &length, &offset))
        return NULL;
    cx_json_error error;
    cx_json_doc *doc = cx_json_parse(text, (size_t)length, 0, &error);
    if (!doc)
        return PyErr_Format(PyExc_ValueError, "at byte %zu: %s", error.pos, error.message);
    const cx_json_value *root = cx_json_root(doc);
    if (root->kind != CX_JSON_STRING || offset < 0 || (size_t)offset > root->u.string.length + 1) {
        cx_json_free(doc);
        PyErr_SetString(PyExc_ValueError, "data must be one JSON string and offset in 0..length + 1");
        return NULL;
    }
    char *chars = (char *)root->u.string.chars; /* the arena's own memory: a planted bug */
    chars[offset] = 'x';
    cx_json_free(doc);
    Py_RETURN_NONE;
}

static PyObject *py_sanitized(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
#ifdef CX_SANITIZE
    Py_RETURN_TRUE;
#else
    Py_RETURN_FALSE;
#endif
}

PyMethodDef cx_test_io_methods[] = {
    {"_json_parse", py_json_parse, METH_VARARGS,
     "_json_parse(data: bytes, max_values=0) -> object (test build only; see io_testing.c)"},
    {"_json_string_poke", py_json_string_poke, METH_VARARGS,
     "_json_string_poke(data: bytes, offset: int): writes one byte into a parsed string's "
     "arena allocation (a planted bug; see io_testing.c)"},
    {"_sanitized", py_sanitized, METH_NOARGS, "_sanitized() -> bool: built with CX_SANITIZE"},
    {NULL, NULL, 0, NULL},
};
