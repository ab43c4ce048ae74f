/* EdgeNeXt: configs and parameter declaration (see edgenext.h). The forward and
 * backward passes are in edgenext_blocks.c. */
#include "edgenext.h"

#include <stdio.h>
#include <string.h>

#define CONFIG(nm, d0, d1, d2, d3, c0, c1, c2, c3, h)                                     \
    {.name = nm, .depths = {d0, d1, d2, d3}, .dims = {c0, c1, c2, c3}, .heads = h,       \
     .kernel_sizes = {3, 5, 7, 9}, .d2_scales = {2, 2, 3, 4}, .use_pos_emb = {0, 1, 0, 0}, \
     .global_blocks = {0, 1, 1, 1}, .expand_ratio = 4, .ln_eps = 1e-6f,                   \
     .layer_scale_init = 1e-6f, .pos_hidden = 32, .pos_temperature = 10000.0f}

static const cx_edgenext_config known_configs[] = {
    CONFIG("edgenext_xx_small", 2, 2, 6, 2, 24, 48, 88, 168, 4),
    CONFIG("edgenext_x_small", 3, 3, 9, 3, 32, 64, 100, 192, 4),
    CONFIG("edgenext_small", 3, 3, 9, 3, 48, 96, 160, 304, 8),
    CONFIG("edgenext_base", 3, 3, 9, 3, 80, 160, 288, 584, 8),
    /* a tiny config for tests: every block kind, uneven splits, few parameters */
    CONFIG("edgenext_tiny_test", 1, 2, 2, 2, 16, 24, 32, 48, 2),
};
#define N_CONFIGS (int)(sizeof known_configs / sizeof known_configs[0])

const char *cx_edgenext_config_names(void) {
    static char names[256];
    if (!names[0]) {
        size_t used = 0;
        for (int i = 0; i < N_CONFIGS; i++)
            used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "",
                                     known_configs[i].name);
    }
    return names;
}

cx_status cx_edgenext_config_by_name(const char *name, cx_edgenext_config *out) {
    for (int i = 0; i < N_CONFIGS; i++) {
        if (strcmp(known_configs[i].name, name) == 0) {
            *out = known_configs[i];
            return CX_OK;
        }
    }
    return cx_fail(CX_EKEY, "unknown backbone '%s'; known: %s", name, cx_edgenext_config_names());
}

/* ---- parameter declaration, in timm's state_dict order ------------------------------ */

typedef struct {
    cx_param_table *table;
    const char *prefix;
    char scope[64];
} declarer;

static cx_status add(declarer *d, const char *leaf, int ndim, int64_t a, int64_t b, int64_t c,
                     int64_t e, int decay, cx_init_kind init, float value, size_t *offset) {
    char name[2 * CX_PARAM_NAME_MAX]; /* cx_params_add rejects names that are too long */
    snprintf(name, sizeof name, "%s%s", d->scope, leaf);
    int64_t shape[4] = {a, b, c, e};
    return cx_params_add(d->table, d->prefix, name, ndim, shape, decay, init, value, 0, offset);
}

/* conv weight [out, in/groups, k, k] (trunc normal, decayed) and bias [out] (zero) */
static cx_status add_conv(declarer *d, const char *leaf, int out_ch, int in_per_group, int k,
                          size_t *w, size_t *b) {
    char name[64];
    snprintf(name, sizeof name, "%s.weight", leaf);
    CX_TRY(add(d, name, 4, out_ch, in_per_group, k, k, 1, CX_INIT_TRUNC_NORMAL, 0, w));
    snprintf(name, sizeof name, "%s.bias", leaf);
    return add(d, name, 1, out_ch, 0, 0, 0, 0, CX_INIT_ZERO, 0, b);
}

static cx_status add_linear(declarer *d, const char *leaf, int out_f, int in_f, size_t *w,
                            size_t *b) {
    char name[64];
    snprintf(name, sizeof name, "%s.weight", leaf);
    CX_TRY(add(d, name, 2, out_f, in_f, 0, 0, 1, CX_INIT_TRUNC_NORMAL, 0, w));
    snprintf(name, sizeof name, "%s.bias", leaf);
    return add(d, name, 1, out_f, 0, 0, 0, 0, CX_INIT_ZERO, 0, b);
}

static cx_status add_norm(declarer *d, const char *leaf, int dim, size_t *w, size_t *b) {
    char name[64];
    snprintf(name, sizeof name, "%s.weight", leaf);
    CX_TRY(add(d, name, 1, dim, 0, 0, 0, 0, CX_INIT_ONE, 0, w));
    snprintf(name, sizeof name, "%s.bias", leaf);
    return add(d, name, 1, dim, 0, 0, 0, 0, CX_INIT_ZERO, 0, b);
}

static cx_status declare_block(declarer *d, const cx_edgenext_config *cfg, int stage,
                               cx_edgenext_block *blk) {
    int dim = cfg->dims[stage];
    blk->dim = dim;
    blk->kernel = cfg->kernel_sizes[stage];
    blk->hidden = cfg->expand_ratio * dim;
    float ls = cfg->layer_scale_init;
    if (!blk->is_sdta) {
        CX_TRY(add(d, "gamma", 1, dim, 0, 0, 0, 0, CX_INIT_CONST, ls, &blk->gamma));
        CX_TRY(add_conv(d, "conv_dw", dim, 1, blk->kernel, &blk->dw_w, &blk->dw_b));
    } else {
        int scales = cfg->d2_scales[stage];
        int n_convs = scales - 1 > 1 ? scales - 1 : 1;
        int width = (dim + n_convs) / (n_convs + 1); /* torch.chunk: ceil(C / chunks) */
        int chunks_made = (dim + width - 1) / width;
        if (n_convs >= CX_SDTA_MAX_SPLITS || chunks_made != n_convs + 1 ||
            dim - n_convs * width <= 0)
            return cx_fail(CX_EINVAL, "stage %d: %d channels cannot be split into %d chunks",
                           stage, dim, n_convs + 1);
        blk->n_splits = n_convs;
        blk->split_width = width;
        blk->has_pos = cfg->use_pos_emb[stage];
        CX_TRY(add(d, "gamma_xca", 1, dim, 0, 0, 0, 0, CX_INIT_CONST, ls, &blk->gamma_xca));
        CX_TRY(add(d, "gamma", 1, dim, 0, 0, 0, 0, CX_INIT_CONST, ls, &blk->gamma));
        for (int i = 0; i < n_convs; i++) {
            char leaf[32];
            snprintf(leaf, sizeof leaf, "convs.%d", i);
            CX_TRY(add_conv(d, leaf, width, 1, 3, &blk->conv_w[i], &blk->conv_b[i]));
        }
        if (blk->has_pos)
            CX_TRY(add_conv(d, "pos_embd.token_projection", dim, 2 * cfg->pos_hidden, 1,
                            &blk->pos_w, &blk->pos_b));
        CX_TRY(add_norm(d, "norm_xca", dim, &blk->norm_xca_w, &blk->norm_xca_b));
        CX_TRY(add(d, "xca.temperature", 3, cfg->heads, 1, 1, 0, 0, CX_INIT_ONE, 0,
                   &blk->temperature));
        CX_TRY(add_linear(d, "xca.qkv", 3 * dim, dim, &blk->qkv_w, &blk->qkv_b));
        CX_TRY(add_linear(d, "xca.proj", dim, dim, &blk->proj_w, &blk->proj_b));
    }
    CX_TRY(add_norm(d, "norm", dim, &blk->norm_w, &blk->norm_b));
    CX_TRY(add_linear(d, "mlp.fc1", blk->hidden, dim, &blk->fc1_w, &blk->fc1_b));
    return add_linear(d, "mlp.fc2", dim, blk->hidden, &blk->fc2_w, &blk->fc2_b);
}

cx_status cx_edgenext_declare(cx_edgenext *net, const cx_edgenext_config *cfg,
                              cx_param_table *table, const char *prefix) {
    memset(net, 0, sizeof *net);
    net->cfg = *cfg;
    if (cfg->dims[0] % cfg->heads || cfg->dims[1] % cfg->heads || cfg->dims[2] % cfg->heads ||
        cfg->dims[3] % cfg->heads)
        return cx_fail(CX_EINVAL, "config %s: dims must be divisible by heads %d", cfg->name,
                       cfg->heads);
    declarer d = {table, prefix, ""};
    net->stage_start[0] = table->total;
    snprintf(d.scope, sizeof d.scope, "stem.");
    CX_TRY(add_conv(&d, "0", cfg->dims[0], 3, 4, &net->stem_w, &net->stem_b));
    CX_TRY(add_norm(&d, "1", cfg->dims[0], &net->stem_norm_w, &net->stem_norm_b));
    for (int s = 0; s < 4; s++) {
        if (cfg->depths[s] < 1 || cfg->depths[s] > CX_EDGENEXT_MAX_BLOCKS ||
            cfg->global_blocks[s] > cfg->depths[s])
            return cx_fail(CX_EINVAL, "config %s: bad depth %d in stage %d", cfg->name,
                           cfg->depths[s], s);
        if (s > 0) {
            net->stage_start[s] = table->total;
            snprintf(d.scope, sizeof d.scope, "stages.%d.downsample.", s);
            CX_TRY(add_norm(&d, "0", cfg->dims[s - 1], &net->ds_norm_w[s], &net->ds_norm_b[s]));
            CX_TRY(add_conv(&d, "1", cfg->dims[s], cfg->dims[s - 1], 2, &net->ds_w[s],
                            &net->ds_b[s]));
        }
        net->n_blocks[s] = cfg->depths[s];
        for (int j = 0; j < cfg->depths[s]; j++) {
            cx_edgenext_block *blk = &net->blocks[s][j];
            blk->is_sdta = j >= cfg->depths[s] - cfg->global_blocks[s];
            snprintf(d.scope, sizeof d.scope, "stages.%d.blocks.%d.", s, j);
            CX_TRY(declare_block(&d, cfg, s, blk));
        }
    }
    return CX_OK;
}

cx_status cx_edgenext_check_input(const cx_edgenext *net, int batch, int channels, int height,
                                  int width) {
    if (batch < 1)
        return cx_fail(CX_EINVAL, "batch size must be at least 1, got %d", batch);
    if (channels != 3)
        return cx_fail(CX_EINVAL, "input must have 3 channels (NCHW), got %d", channels);
    if (height < 32 || width < 32 || height % 32 || width % 32)
        return cx_fail(CX_EINVAL,
                       "input height and width must be positive multiples of 32, got %dx%d",
                       height, width);
    return CX_OK;
}
