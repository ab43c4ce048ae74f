/* A standalone EdgeNeXt backbone: owns its parameter and gradient buffers, its
 * activation arena and the plan, for feature extraction and gradient checks from
 * Python (codext.Backbone). The COD model embeds cx_edgenext directly instead. */
#ifndef CX_BACKBONE_H
#define CX_BACKBONE_H

#include "edgenext.h"

typedef struct {
    cx_edgenext net;
    cx_param_table table;
    cx_backend *be;
    float *params; /* table.total floats */
    float *grads;  /* same layout */
    cx_arena arena;
    int plan_batch, plan_height, plan_width; /* shape the arena was planned for */
    size_t after_forward; /* arena mark after the last forward */
    float *input;         /* arena copy of the last forward's input */
    int have_forward;
} cx_backbone;

cx_status cx_backbone_create(const char *config_name, uint64_t seed, cx_backend *be,
                             cx_backbone **out);
void cx_backbone_free(cx_backbone *bb);
/* x_host [B, 3, H, W]; afterwards features are in bb->net.features (backend memory). */
cx_status cx_backbone_forward(cx_backbone *bb, const float *x_host, int batch, int height,
                              int width);
/* dfeatures_host[s] [B, dims[s], H/2^(s+2), W/2^(s+2)]; overwrites bb->grads with the
 * parameter gradients and writes dx_host [B, 3, H, W] (if not NULL). */
cx_status cx_backbone_backward(cx_backbone *bb, const float *const dfeatures_host[4],
                               float *dx_host);
/* Bytes of activation memory planned for the current shape. */
size_t cx_backbone_arena_bytes(const cx_backbone *bb);

#endif
