/* Training state save/load (see train_state.h). */
#include "train_state.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATE_FORMAT_VERSION "1"
#define N_KINDS 3
static const char *const kind_prefix[N_KINDS] = {"ema.", "exp_avg.", "exp_avg_sq."};

/* ---- buffers ---------------------------------------------------------------------- */

cx_status cx_train_state_alloc(const cx_param_table *table, cx_train_state *state) {
    memset(state, 0, sizeof *state);
    state->loss_scale = 1.0;
    size_t bytes = (table->total ? table->total : 1) * sizeof(float);
    state->exp_avg = cx_aligned_alloc(bytes);
    state->exp_avg_sq = cx_aligned_alloc(bytes);
    state->ema = cx_aligned_alloc(bytes);
    state->param_steps = calloc((size_t)(table->count ? table->count : 1), sizeof(int64_t));
    if (!state->exp_avg || !state->exp_avg_sq || !state->ema || !state->param_steps) {
        cx_train_state_free(state);
        return cx_fail(CX_ENOMEM, "out of memory for the training state (%zu floats x 3)",
                       table->total);
    }
    memset(state->exp_avg, 0, bytes);
    memset(state->exp_avg_sq, 0, bytes);
    memset(state->ema, 0, bytes);
    return CX_OK;
}

void cx_train_state_free(cx_train_state *state) {
    cx_aligned_free(state->exp_avg);
    cx_aligned_free(state->exp_avg_sq);
    cx_aligned_free(state->ema);
    free(state->param_steps);
    state->exp_avg = state->exp_avg_sq = state->ema = NULL;
    state->param_steps = NULL;
}

/* ---- save ------------------------------------------------------------------------- */

enum { META_FORMAT, META_VERSION, META_STEP, META_EPOCH, META_EPOCH_STEP, META_STAGE,
       META_STAGE_STEP, META_SEED, META_EMA_UPDATES, META_LOSS_SCALE, META_SCALE_GOOD,
       META_PARAM_STEPS, META_LOSS_SCALING, N_META };
static const char *const meta_key[N_META] = {
    "format", "format_version", "step", "epoch", "epoch_step", "stage", "stage_step", "seed",
    "ema_updates", "loss_scale", "loss_scale_good_steps", "param_steps", "loss_scaling"};

/* "[a,b,c]" of the step counts; malloc'ed, NULL when out of memory. */
static char *steps_json(const int64_t *steps, int count) {
    size_t cap = (size_t)count * 21 + 3, len = 0;
    char *text = malloc(cap);
    if (!text)
        return NULL;
    text[len++] = '[';
    for (int i = 0; i < count; i++)
        len += (size_t)snprintf(text + len, cap - len, i ? ",%" PRId64 : "%" PRId64, steps[i]);
    text[len++] = ']';
    text[len] = '\0';
    return text;
}

cx_status cx_train_state_save(const char *path, const cx_param_table *table,
                              const cx_train_state *state, int n_extra,
                              const char *const *extra_keys, const char *const *extra_values) {
    if (n_extra < 0 || (n_extra && (!extra_keys || !extra_values)))
        return cx_fail(CX_EINVAL, "%s: bad extra metadata", path);
    int count = table->count, n_tensors = 0;
    size_t name_bytes = 0;
    for (int i = 0; i < count; i++) {
        int kinds = state->param_steps[i] > 0 ? 3 : 1;
        n_tensors += kinds;
        name_bytes += (size_t)kinds * (strlen(table->items[i].name) + 16);
    }
    int n_meta = N_META + n_extra;
    char *names_text = malloc(name_bytes + 1);
    const char **names = malloc(sizeof *names * (size_t)(n_tensors + 1));
    int *ndims = malloc(sizeof *ndims * (size_t)(n_tensors + 1));
    const int64_t **shapes = malloc(sizeof *shapes * (size_t)(n_tensors + 1));
    const float **data = malloc(sizeof *data * (size_t)(n_tensors + 1));
    const char **keys = malloc(sizeof *keys * (size_t)n_meta);
    const char **values = malloc(sizeof *values * (size_t)n_meta);
    char *steps_text = steps_json(state->param_steps, count);
    char scalars[N_META][32];
    cx_status status = CX_OK;
    if (!names_text || !names || !ndims || !shapes || !data || !keys || !values || !steps_text) {
        status = cx_fail(CX_ENOMEM, "%s: out of memory writing the training state", path);
        goto done;
    }
    size_t used = 0;
    int t = 0;
    for (int kind = 0; kind < N_KINDS; kind++) {
        const float *buffer = kind == 0 ? state->ema : kind == 1 ? state->exp_avg : state->exp_avg_sq;
        for (int i = 0; i < count; i++) {
            const cx_param *p = &table->items[i];
            if (kind > 0 && state->param_steps[i] <= 0)
                continue;
            names[t] = names_text + used;
            used += (size_t)sprintf(names_text + used, "%s%s", kind_prefix[kind], p->name) + 1;
            ndims[t] = p->ndim;
            shapes[t] = p->shape;
            data[t] = buffer + p->offset;
            t++;
        }
    }
    snprintf(scalars[META_STEP], 32, "%" PRId64, state->step);
    snprintf(scalars[META_EPOCH], 32, "%" PRId64, state->epoch);
    snprintf(scalars[META_EPOCH_STEP], 32, "%" PRId64, state->epoch_step);
    snprintf(scalars[META_STAGE], 32, "%d", state->stage);
    snprintf(scalars[META_STAGE_STEP], 32, "%" PRId64, state->stage_step);
    snprintf(scalars[META_SEED], 32, "%" PRIu64, state->seed);
    snprintf(scalars[META_EMA_UPDATES], 32, "%" PRId64, state->ema_updates);
    snprintf(scalars[META_LOSS_SCALE], 32, "%.17g", state->loss_scale);
    snprintf(scalars[META_SCALE_GOOD], 32, "%" PRId64, state->loss_scale_good_steps);
    snprintf(scalars[META_LOSS_SCALING], 32, "%d", state->loss_scaling ? 1 : 0);
    for (int k = 0; k < N_META; k++) {
        keys[k] = meta_key[k];
        values[k] = scalars[k];
    }
    values[META_FORMAT] = CX_TRAIN_STATE_FORMAT;
    values[META_VERSION] = STATE_FORMAT_VERSION;
    values[META_PARAM_STEPS] = steps_text;
    for (int k = 0; k < n_extra; k++) {
        for (int j = 0; j < N_META; j++)
            if (extra_keys[k] && strcmp(extra_keys[k], meta_key[j]) == 0) {
                status = cx_fail(CX_EINVAL, "%s: extra metadata key \"%s\" is reserved for the "
                                 "training state", path, extra_keys[k]);
                goto done;
            }
        keys[N_META + k] = extra_keys[k];
        values[N_META + k] = extra_values[k];
    }
    status = cx_st_write_f32(path, n_tensors, names, ndims, shapes, data, n_meta, keys, values);
done:
    free(names_text);
    free(names);
    free(ndims);
    free(shapes);
    free(data);
    free(keys);
    free(values);
    free(steps_text);
    return status;
}

/* ---- load ------------------------------------------------------------------------- */

const char *cx_train_state_meta(const cx_st_file *file, const char *key) {
    for (int k = 0; k < file->n_metadata; k++)
        if (strcmp(file->metadata_keys[k], key) == 0)
            return file->metadata_values[k];
    return NULL;
}

static cx_status meta_text(const cx_st_file *file, const char *key, const char **text) {
    *text = cx_train_state_meta(file, key);
    if (!*text)
        return cx_fail(CX_EIO, "%s: training state has no \"%s\" in its metadata", file->path, key);
    return CX_OK;
}

static cx_status meta_int(const cx_st_file *file, const char *key, int64_t min_value,
                          int64_t *out) {
    const char *text;
    CX_TRY(meta_text(file, key, &text));
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno || end == text || *end || value < min_value)
        return cx_fail(CX_EIO, "%s: training state metadata \"%s\" = \"%.40s\" is not an integer "
                       ">= %lld", file->path, key, text, (long long)min_value);
    *out = value;
    return CX_OK;
}

static cx_status parse_steps(const cx_st_file *file, const char *text, int count,
                             int64_t *steps) {
    const char *c = text;
    int n = 0;
    if (*c++ != '[')
        goto bad;
    while (*c && *c != ']') {
        char *end;
        errno = 0;
        long long value = strtoll(c, &end, 10);
        if (errno || end == c || value < 0)
            goto bad;
        if (n < count)
            steps[n] = value;
        n++;
        c = end;
        if (*c == ',')
            c++;
        else if (*c != ']')
            goto bad;
    }
    if (*c != ']' || c[1] != '\0')
        goto bad;
    if (n != count)
        return cx_fail(CX_EINVAL, "%s: training state has %d parameters, this model has %d: it "
                       "belongs to another model config", file->path, n, count);
    return CX_OK;
bad:
    return cx_fail(CX_EIO, "%s: training state metadata \"param_steps\" is not a list of "
                   "step counts", file->path);
}

static void shape_text(char *out, size_t size, int ndim, const int64_t *shape) {
    size_t len = (size_t)snprintf(out, size, "[");
    for (int d = 0; d < ndim && len < size; d++)
        len += (size_t)snprintf(out + len, size - len, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (len < size)
        snprintf(out + len, size - len, "]");
}

static cx_status load_tensors(cx_st_file *file, const cx_param_table *table,
                              cx_train_state *state, unsigned char *seen) {
    for (int t = 0; t < file->n_tensors; t++) {
        const cx_st_tensor *tensor = &file->tensors[t];
        int kind = -1;
        for (int k = 0; k < N_KINDS && kind < 0; k++)
            if (strncmp(tensor->name, kind_prefix[k], strlen(kind_prefix[k])) == 0)
                kind = k;
        if (kind < 0)
            return cx_fail(CX_EIO, "%s: unexpected tensor '%.200s' in a training state", file->path,
                           tensor->name);
        const char *name = tensor->name + strlen(kind_prefix[kind]);
        int i = cx_params_find(table, name);
        if (i < 0)
            return cx_fail(CX_EINVAL, "%s: training state has '%.200s' but this model has no "
                           "parameter '%.200s': it belongs to another model config", file->path,
                           tensor->name, name);
        const cx_param *p = &table->items[i];
        int same = tensor->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++)
            same = tensor->shape[d] == p->shape[d];
        if (!same) {
            char want[96], got[96];
            shape_text(want, sizeof want, p->ndim, p->shape);
            shape_text(got, sizeof got, tensor->ndim, tensor->shape);
            return cx_fail(CX_EINVAL, "%s: training state '%.200s' has shape %s, this model's "
                           "parameter %s has %s: it belongs to another model config", file->path,
                           tensor->name, got, p->name, want);
        }
        if (kind > 0 && state->param_steps[i] == 0)
            return cx_fail(CX_EIO, "%s: training state has '%.200s' but the parameter's step count "
                           "is 0", file->path, tensor->name);
        float *buffer = kind == 0 ? state->ema : kind == 1 ? state->exp_avg : state->exp_avg_sq;
        CX_TRY(cx_st_read_f32(file, t, buffer + p->offset));
        seen[(size_t)kind * (size_t)table->count + (size_t)i] = 1;
    }
    for (int i = 0; i < table->count; i++)
        for (int kind = 0; kind < N_KINDS; kind++) {
            int needed = kind == 0 || state->param_steps[i] > 0;
            if (needed && !seen[(size_t)kind * (size_t)table->count + (size_t)i])
                return cx_fail(CX_EINVAL, "%s: training state has no '%s%s': it belongs to "
                               "another model config", file->path, kind_prefix[kind],
                               table->items[i].name);
        }
    return CX_OK;
}

static cx_status load_from(cx_st_file *file, const cx_param_table *table, cx_train_state *state) {
    const char *text;
    CX_TRY(meta_text(file, "format", &text));
    if (strcmp(text, CX_TRAIN_STATE_FORMAT) != 0)
        return cx_fail(CX_EIO, "%s: not a codext training state (format \"%.60s\")", file->path,
                       text);
    CX_TRY(meta_text(file, "format_version", &text));
    if (strcmp(text, STATE_FORMAT_VERSION) != 0)
        return cx_fail(CX_EIO, "%s: training state format version %.20s is not supported (this "
                       "build reads %s)", file->path, text, STATE_FORMAT_VERSION);
    int64_t stage;
    CX_TRY(meta_int(file, "step", 0, &state->step));
    CX_TRY(meta_int(file, "epoch", 0, &state->epoch));
    CX_TRY(meta_int(file, "epoch_step", 0, &state->epoch_step));
    CX_TRY(meta_int(file, "stage", 0, &stage));
    if (stage > 2)
        return cx_fail(CX_EIO, "%s: training state stage %lld is not 0, 1 or 2", file->path,
                       (long long)stage);
    state->stage = (int)stage;
    CX_TRY(meta_int(file, "stage_step", 0, &state->stage_step));
    CX_TRY(meta_int(file, "ema_updates", 0, &state->ema_updates));
    CX_TRY(meta_int(file, "loss_scale_good_steps", 0, &state->loss_scale_good_steps));
    int64_t scaling = 0;
    if (cx_train_state_meta(file, "loss_scaling"))
        CX_TRY(meta_int(file, "loss_scaling", 0, &scaling));
    else /* a file written before the key existed: a scale that moved was live */
        scaling = -1;
    if (scaling > 1)
        return cx_fail(CX_EIO, "%s: training state loss_scaling %lld is not 0 or 1", file->path,
                       (long long)scaling);
    state->loss_scaling = (int)scaling;
    CX_TRY(meta_text(file, "seed", &text));
    char *end;
    errno = 0;
    unsigned long long seed = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-')
        return cx_fail(CX_EIO, "%s: training state seed \"%.40s\" is not an unsigned integer",
                       file->path, text);
    state->seed = seed;
    CX_TRY(meta_text(file, "loss_scale", &text));
    errno = 0;
    double scale = strtod(text, &end);
    if (errno || end == text || *end || !(scale > 0.0))
        return cx_fail(CX_EIO, "%s: training state loss_scale \"%.40s\" is not a positive number",
                       file->path, text);
    state->loss_scale = scale;
    if (scaling < 0)
        state->loss_scaling = scale != 1.0 || state->loss_scale_good_steps > 0;
    CX_TRY(meta_text(file, "param_steps", &text));
    CX_TRY(parse_steps(file, text, table->count, state->param_steps));
    /* zero first: moments of parameters with step count 0 are not stored */
    memset(state->exp_avg, 0, table->total * sizeof(float));
    memset(state->exp_avg_sq, 0, table->total * sizeof(float));
    unsigned char *seen = calloc((size_t)N_KINDS * (size_t)(table->count ? table->count : 1), 1);
    if (!seen)
        return cx_fail(CX_ENOMEM, "out of memory loading %s", file->path);
    cx_status status = load_tensors(file, table, state, seen);
    free(seen);
    return status;
}

cx_status cx_train_state_load(const char *path, const cx_param_table *table,
                              cx_train_state *state, cx_st_file **file_out) {
    if (file_out)
        *file_out = NULL;
    cx_st_file *file = NULL;
    CX_TRY(cx_st_open(path, &file));
    cx_status status = load_from(file, table, state);
    if (status == CX_OK && file_out)
        *file_out = file;
    else
        cx_st_close(file);
    return status;
}
