/* One neck scale: projection and mixture of experts (see cod.h; twin interpretations 2-5).
 *
 *   z   = LayerNorm2d(conv1x1(f))                     [B, D, hw]
 *   g   = softmax(gate(GAP(z)))                       [B, E], per image
 *   z'  = z + sum over e (increasing) of w_e * expert_e(z)
 *
 * Dense (top_k 0): w = g, every expert runs on the whole batch; the weights used by the
 * per-image scaling are g transposed to [E, B] on the device.
 *
 * Sparse (top_k k): the routing is decided on the host. The gate probabilities are
 * downloaded (one small sync per scale), each image picks its k largest (ties to the lower
 * expert index), w = g / (sum of the chosen g), and expert e runs only on the images that
 * chose it: they are gathered into a contiguous sub-batch, the expert runs, and its
 * weighted output is added back into their rows. The weights go up as [E, B] (expert e's
 * rows in increasing image order). In backward the gradients of those weights come down
 * (a second sync per scale), the renormalisation and the balance term
 * E * sum_e f_e P_e (f_e constant, P_e = mean over the batch of g_e) are differentiated on
 * the host in double, and d g goes back up for the softmax backward.
 *
 * Planning (counting arena) cannot see the routing: it runs every expert on the whole
 * batch, the worst case, so any real routing fits. */
#include "cod.h"

#include <stdio.h>
#include <string.h>

#define P(off) (ex->params + (off))
#define G(off) (ex->grads ? ex->grads + (off) : NULL)

cx_status cx_cod_neck_declare(cx_cod_neck *neck, int scale, int in_ch, int dim, int n_experts,
                              int top_k, cx_param_table *table) {
    memset(neck, 0, sizeof *neck);
    neck->in_ch = in_ch;
    neck->dim = dim;
    neck->n_experts = n_experts;
    neck->top_k = top_k;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "neck.%d.", scale);
    CX_TRY(cx_cod_add_layer(table, prefix, "proj.conv", dim, in_ch, 1, &neck->proj_conv));
    CX_TRY(cx_cod_add_norm(table, prefix, "proj.norm", dim, &neck->proj_norm));
    /* the gate starts at zero (every expert 1/E) and has no weight decay */
    CX_TRY(cx_cod_add_layer(table, prefix, "moe.gate", n_experts, dim, 0, &neck->gate));
    for (int i = table->count - 2; i < table->count; i++) {
        table->items[i].init = CX_INIT_ZERO;
        table->items[i].decay = 0;
    }
    for (int e = 0; e < n_experts; e++) {
        snprintf(prefix, sizeof prefix, "neck.%d.moe.experts.%d.", scale, e);
        CX_TRY(cx_cod_expert_declare(&neck->experts[e], (cx_expert_type)(e % CX_EXPERT_TYPES),
                                     dim, table, prefix));
    }
    return CX_OK;
}

void cx_cod_neck_init_edges(const cx_cod_neck *neck, float *host_params) {
    /* output 3c + j of the grouped conv gets filter j (rows = kernel y) */
    static const float filters[3][9] = {
        {-1, 0, 1, -2, 0, 2, -1, 0, 1}, /* Sobel-x */
        {-1, -2, -1, 0, 0, 0, 1, 2, 1}, /* Sobel-y */
        {0, 1, 0, 1, -4, 1, 0, 1, 0},   /* Laplacian */
    };
    for (int e = 0; e < neck->n_experts; e++) {
        const cx_cod_expert *x = &neck->experts[e];
        if (x->type != CX_EXPERT_EDGE)
            continue;
        float *w = host_params + x->u.edge.w;
        for (int c = 0; c < 3 * x->dim; c++)
            memcpy(w + (size_t)c * 9, filters[c % 3], sizeof filters[0]);
        memset(host_params + x->u.edge.b, 0, (size_t)3 * x->dim * sizeof(float));
    }
}

/* ---- routing on the host (sparse mode) ----------------------------------------------- */

static int chose(const cx_cod_neck *neck, int b, int e) {
    const int *chosen = neck->chosen + (size_t)b * neck->top_k;
    for (int slot = 0; slot < neck->top_k; slot++)
        if (chosen[slot] == e)
            return 1;
    return 0;
}

/* From probs_host [B, E]: chosen, weights_host, rows / n_rows, balance; the applied
 * weights in [E, B] order into transfer_host. */
static void route(cx_cod_neck *neck, int B) {
    int E = neck->n_experts, k = neck->top_k;
    const float *probs = neck->probs_host;
    for (int b = 0; b < B; b++) {
        const float *g = probs + (size_t)b * E;
        int *chosen = neck->chosen + (size_t)b * k;
        double sum = 0.0;
        for (int slot = 0; slot < k; slot++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                int taken = 0;
                for (int s = 0; s < slot; s++)
                    taken |= chosen[s] == e;
                if (!taken && (best < 0 || g[e] > g[best])) /* strict: ties to the lower index */
                    best = e;
            }
            chosen[slot] = best;
            sum += (double)g[best];
        }
        double *weights = neck->weights_host + (size_t)b * E;
        for (int e = 0; e < E; e++)
            weights[e] = 0.0;
        for (int slot = 0; slot < k; slot++)
            weights[chosen[slot]] = (double)g[chosen[slot]] / sum;
    }
    double balance = 0.0;
    for (int e = 0; e < E; e++) {
        int n = 0;
        double mean_prob = 0.0;
        for (int b = 0; b < B; b++) {
            mean_prob += (double)probs[(size_t)b * E + e];
            if (chose(neck, b, e)) {
                neck->rows[(size_t)e * B + n] = b;
                neck->transfer_host[(size_t)e * B + n] = (float)neck->weights_host[(size_t)b * E + e];
                n++;
            }
        }
        neck->n_rows[e] = n; /* an image picks e at most once: n = (image, slot) pairs */
        balance += (double)n / ((double)B * k) * (mean_prob / B);
    }
    neck->balance = E * balance;
}

/* d loss / d g [B, E] into transfer_host, from d loss / d (applied weights) in [E, B]
 * order (transfer_host on entry) and dbalance:
 *   w_e = g_e / S, S = sum of the chosen g: d g_j = (d w_j - sum_c d w_c g_c / S) / S
 *   (j chosen), plus dbalance * E * f_j / B from the balance term. */
static void route_backward(cx_cod_neck *neck, int B, double dbalance) {
    int E = neck->n_experts, k = neck->top_k;
    double *dw = neck->dweights_host; /* [B, E] */
    for (size_t i = 0; i < (size_t)B * E; i++)
        dw[i] = 0.0;
    for (int e = 0; e < E; e++)
        for (int i = 0; i < neck->n_rows[e]; i++)
            dw[(size_t)neck->rows[(size_t)e * B + i] * E + e] =
                (double)neck->transfer_host[(size_t)e * B + i];
    for (int b = 0; b < B; b++) {
        const float *g = neck->probs_host + (size_t)b * E;
        const int *chosen = neck->chosen + (size_t)b * k;
        double sum = 0.0, dot = 0.0;
        for (int slot = 0; slot < k; slot++) {
            int e = chosen[slot];
            sum += (double)g[e];
            dot += dw[(size_t)b * E + e] * (double)g[e];
        }
        float *dg = neck->transfer_host + (size_t)b * E;
        for (int e = 0; e < E; e++) {
            double grad = dbalance * E * ((double)neck->n_rows[e] / ((double)B * k)) / B;
            if (chose(neck, b, e))
                grad += (dw[(size_t)b * E + e] - dot / sum) / sum;
            dg[e] = (float)grad;
        }
    }
}

/* ---- forward --------------------------------------------------------------------------- */

cx_status cx_cod_neck_forward(cx_cod_neck *neck, cx_exec *ex, const float *f, int batch, int h,
                              int w) {
    cx_backend *be = ex->be;
    int B = batch, D = neck->dim, E = neck->n_experts, hw = h * w;
    size_t count = (size_t)B * D * hw, image = (size_t)D * hw;
    int sparse = neck->top_k > 0, planning = ex->arena->planning;
    neck->batch = B;
    neck->h = h;
    neck->w = w;
    neck->feature = f;
    cx_conv_shape cs = cx_cod_conv(B, neck->in_ch, h, w, D, 1, 1, 1);
    CX_TAKE(ex, neck->proj_conv_out, count);
    be->conv2d_forward(be, &cs, f, P(neck->proj_conv.w), P(neck->proj_conv.b),
                       neck->proj_conv_out);
    CX_TAKE(ex, neck->z, count);
    CX_TAKE(ex, neck->proj_saved, cx_layernorm2d_saved_floats(B, hw));
    be->layernorm2d_forward(be, B, D, hw, CX_COD_LN_EPS, neck->proj_conv_out,
                            P(neck->proj_norm.w), P(neck->proj_norm.b), neck->z,
                            neck->proj_saved);
    CX_TAKE(ex, neck->gap, (size_t)B * D);
    be->global_avgpool_forward(be, B * D, hw, neck->z, neck->gap);
    CX_TAKE(ex, neck->gate_logits, (size_t)B * E);
    be->linear_forward(be, B, D, E, neck->gap, P(neck->gate.w), P(neck->gate.b),
                       neck->gate_logits);
    CX_TAKE(ex, neck->probs, (size_t)B * E);
    be->softmax_forward(be, B, E, neck->gate_logits, neck->probs);
    CX_TAKE(ex, neck->expert_weights, (size_t)E * B);
    neck->balance = 0.0;
    if (!sparse || planning) {
        for (int e = 0; e < E; e++)
            neck->n_rows[e] = B;
        be->transpose(be, 1, B, E, neck->probs, neck->expert_weights); /* [B,E] -> [E,B] */
    } else {
        be->download(be, neck->probs_host, neck->probs, (size_t)B * E);
        CX_TRY(be->sync(be));
        route(neck, B);
        be->upload(be, neck->expert_weights, neck->transfer_host, (size_t)E * B);
    }

    float *mix, *scaled;
    CX_TAKE_ZERO(ex, mix, count);
    CX_TAKE(ex, scaled, count);
    for (int e = 0; e < E; e++) {
        cx_cod_expert *expert = &neck->experts[e];
        int n = neck->n_rows[e];
        expert->n = n;
        if (n == 0)
            continue;
        const int *rows = sparse && !planning ? neck->rows + (size_t)e * B : NULL;
        const float *input = neck->z;
        if (sparse) { /* gather the images that chose e (all of them while planning) */
            float *gathered;
            CX_TAKE(ex, gathered, (size_t)n * image);
            if (!planning)
                for (int i = 0; i < n; i++)
                    be->copy(be, gathered + i * image, neck->z + rows[i] * image, image);
            input = gathered;
        }
        CX_TRY(cx_cod_expert_forward(expert, ex, input, n, h, w));
        be->scale_mid_forward(be, 1, n, (int)image, expert->out,
                              neck->expert_weights + (size_t)e * B, scaled);
        if (!sparse || planning)
            be->axpy(be, count, 1.0f, scaled, mix);
        else
            for (int i = 0; i < n; i++)
                be->axpy(be, image, 1.0f, scaled + i * image, mix + rows[i] * image);
    }
    CX_TAKE(ex, neck->out, count);
    be->add(be, count, neck->z, mix, neck->out);
    return CX_OK;
}

/* ---- backward -------------------------------------------------------------------------- */

cx_status cx_cod_neck_backward(cx_cod_neck *neck, cx_exec *ex, const float *dout,
                               double dbalance, float *dfeature) {
    cx_backend *be = ex->be;
    int B = neck->batch, D = neck->dim, E = neck->n_experts, hw = neck->h * neck->w;
    size_t count = (size_t)B * D * hw, image = (size_t)D * hw;
    int sparse = neck->top_k > 0, planning = ex->arena->planning;
    float *dz, *dweights;
    CX_TAKE_ZERO(ex, dz, count);
    be->axpy(be, count, 1.0f, dout, dz); /* z' = z + mix */
    CX_TAKE_ZERO(ex, dweights, (size_t)E * B);
    for (int e = E - 1; e >= 0; e--) {
        cx_cod_expert *expert = &neck->experts[e];
        int n = expert->n;
        if (n == 0)
            continue;
        const int *rows = sparse && !planning ? neck->rows + (size_t)e * B : NULL;
        size_t mark = cx_arena_mark(ex->arena);
        const float *dmix = dout;
        if (sparse) {
            float *gathered;
            CX_TAKE(ex, gathered, (size_t)n * image);
            if (!planning)
                for (int i = 0; i < n; i++)
                    be->copy(be, gathered + i * image, dout + rows[i] * image, image);
            dmix = gathered;
        }
        float *dexpert, *dinput = dz;
        CX_TAKE_ZERO(ex, dexpert, (size_t)n * image);
        be->scale_mid_backward(be, 1, n, (int)image, expert->out,
                               neck->expert_weights + (size_t)e * B, dmix, dexpert,
                               dweights + (size_t)e * B);
        if (sparse)
            CX_TAKE_ZERO(ex, dinput, (size_t)n * image);
        CX_TRY(cx_cod_expert_backward(expert, ex, dexpert, dinput));
        if (sparse && !planning)
            for (int i = 0; i < n; i++)
                be->axpy(be, image, 1.0f, dinput + i * image, dz + rows[i] * image);
        else if (sparse)
            be->axpy(be, count, 1.0f, dinput, dz);
        cx_arena_release(ex->arena, mark);
    }
    float *dprobs, *dlogits, *dgap;
    CX_TAKE_ZERO(ex, dprobs, (size_t)B * E);
    if (!sparse || planning) {
        be->transpose_accumulate(be, 1, E, B, dweights, dprobs); /* [E,B] -> [B,E] */
    } else {
        be->download(be, neck->transfer_host, dweights, (size_t)E * B);
        CX_TRY(be->sync(be));
        route_backward(neck, B, dbalance);
        be->upload(be, dprobs, neck->transfer_host, (size_t)B * E);
    }
    CX_TAKE_ZERO(ex, dlogits, (size_t)B * E);
    be->softmax_backward(be, B, E, neck->probs, dprobs, dlogits);
    CX_TAKE_ZERO(ex, dgap, (size_t)B * D);
    be->linear_backward(be, B, D, E, neck->gap, P(neck->gate.w), dlogits, dgap, G(neck->gate.w),
                        G(neck->gate.b));
    be->global_avgpool_backward(be, B * D, hw, dgap, dz);

    float *dconv;
    CX_TAKE_ZERO(ex, dconv, count);
    be->layernorm2d_backward(be, B, D, hw, neck->proj_conv_out, P(neck->proj_norm.w),
                             neck->proj_saved, dz, dconv, G(neck->proj_norm.w),
                             G(neck->proj_norm.b));
    cx_conv_shape cs = cx_cod_conv(B, neck->in_ch, neck->h, neck->w, D, 1, 1, 1);
    be->conv2d_backward(be, &cs, neck->feature, P(neck->proj_conv.w), dconv, dfeature,
                        G(neck->proj_conv.w), G(neck->proj_conv.b));
    return CX_OK;
}
