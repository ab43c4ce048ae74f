/* Shared by the binding files of the model and the trainer (model_types.c, cod_types.c,
 * trainer_types.c, train_binding.c) and by module.c, which adds what they define. */
#ifndef CX_MODEL_BINDING_H
#define CX_MODEL_BINDING_H

#include "binding.h"
#include "../model/cod.h"

/* [(name, shape, offset, decay), ...] for a parameter table, in buffer order
 * (model_types.c). */
PyObject *cx_py_param_table(const cx_param_table *table);
/* The C model behind a _C.CODModel, or NULL with TypeError set (cod_types.c). */
cx_cod_model *cx_py_cod_model(PyObject *obj);

/* Each adds its type to the module; -1 with an exception set on failure. */
int cx_py_add_backbone_type(PyObject *module); /* model_types.c: _C.Backbone */
int cx_py_add_cod_type(PyObject *module);      /* cod_types.c: _C.CODModel */
int cx_py_add_trainer_type(PyObject *module);  /* trainer_types.c: _C.Trainer */


#endif
