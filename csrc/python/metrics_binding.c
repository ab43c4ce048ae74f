/* CPython binding of the metrics functions. */
#include "binding.h"

PyMethodDef cx_py_metrics_methods[] = {
    {NULL, NULL, 0, NULL},
};
