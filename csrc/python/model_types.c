/* Python types for the models (filled in with the backbone). */
#include "binding.h"

int cx_py_add_types(PyObject *module) {
    (void)module;
    return 0;
}
