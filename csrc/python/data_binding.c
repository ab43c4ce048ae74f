/* CPython binding of the data functions. */
#include "binding.h"

PyMethodDef cx_py_data_methods[] = {
    {NULL, NULL, 0, NULL},
};
