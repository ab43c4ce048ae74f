/* The structure loss of the COD decoder on the CPU (semantics in ops.h).
 *
 * Per image b (one plane of h*w pixels, logits x, target y in {0, 1}):
 *   weight = 1 + 5 |avgpool31(y) - y|    (stride 1, pad 15, count_include_pad: / 961)
 *   p = sigmoid(x), bce = max(x, 0) - x y + log(1 + exp(-|x|))
 *   S_w = sum weight, S_bce = sum weight*bce, I = sum weight*p*y, U = sum weight*(p + y)
 *   loss[b] = S_bce / S_w + 1 - (I + 1) / (U - I + 1)
 * Backward (N = I + 1, Q = U - I + 1, p' = p (1 - p)):
 *   dlogits += dloss[b] * weight * ((p - y) / S_w + p' (N - y (Q + N)) / Q^2)
 *
 * saved layout: the weight map [batch, h*w], then per image the four sums
 * [batch, 4] = (S_w, S_bce, I, U) (float32; the model reads them for the wbce and wiou
 * parts).
 *
 * The box filter is cpu_avgpool2d_forward (prefix sums: cost independent of the window).
 * The sums run in double over fixed chunks of CHUNK pixels (chosen by the plane size,
 * never by the thread count) and the chunk partials are added in chunk order, so the
 * result is the same on any number of threads. */
#include "cpu_ops.h"
#include "cpu_error.h"

#include <math.h>

#define CHUNK 4096

typedef struct {
    int batch, chunks_per_image;
    size_t plane;
    const float *logits, *target;
    float *weight;      /* [batch, plane] */
    const float *sums;  /* [batch, 4] (backward) */
    const float *dloss; /* [batch] (backward) */
    float *dlogits;     /* [batch, plane] (backward) */
    double *partials;   /* [batch, chunks_per_image, 4] (forward) */
} loss_job;

/* sigmoid(x) from e = exp(-|x|), which the BCE term needs too: 1 / (1 + e) for x >= 0,
 * e / (1 + e) below (exp(-x) resp. exp(x) are that same e), so one exp per element. */
static inline double sigmoid_from(double x, double e) {
    return x >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

/* Task i = (image, chunk): finishes the weight map and writes the chunk's four sums. */
static void forward_chunks(void *ctx, int64_t begin, int64_t end) {
    const loss_job *job = ctx;
    for (int64_t task = begin; task < end; task++) {
        size_t b = (size_t)(task / job->chunks_per_image);
        size_t start = (size_t)(task % job->chunks_per_image) * CHUNK;
        size_t stop = start + CHUNK < job->plane ? start + CHUNK : job->plane;
        const float *x = job->logits + b * job->plane, *y = job->target + b * job->plane;
        float *weight = job->weight + b * job->plane;
        double sum_w = 0.0, sum_bce = 0.0, inter = 0.0, uni = 0.0;
        for (size_t i = start; i < stop; i++) {
            float wf = 1.0f + 5.0f * fabsf(weight[i] - y[i]);
            weight[i] = wf;
            double wgt = wf, xi = x[i], yi = y[i];
            double e = exp(-fabs(xi)), p = sigmoid_from(xi, e);
            double bce = (xi > 0.0 ? xi : 0.0) - xi * yi + log1p(e);
            sum_w += wgt;
            sum_bce += wgt * bce;
            inter += wgt * p * yi;
            uni += wgt * (p + yi);
        }
        double *out = job->partials + (size_t)task * 4;
        out[0] = sum_w;
        out[1] = sum_bce;
        out[2] = inter;
        out[3] = uni;
    }
}

void cpu_structure_loss_forward(cx_backend *be, int batch, int h, int w, const float *logits,
                                const float *target, float *loss, float *saved) {
    size_t plane = (size_t)h * w;
    float *weight = saved, *sums = saved + (size_t)batch * plane;
    if (batch < 1 || plane == 0)
        return;
    int chunks = (int)((plane + CHUNK - 1) / CHUNK);
    double *partials = (double *)cx_scratch(1, (size_t)batch * chunks * 4 * 2);
    if (!partials) {
        cx_cpu_record_error(CX_ENOMEM, "structure loss forward: out of scratch memory");
        return;
    }
    cx_pool_shape box = {.planes = batch, .in_h = h, .in_w = w, .out_h = h, .out_w = w,
                         .k = 31, .stride = 1, .pad = 15, .count_include_pad = 1};
    cpu_avgpool2d_forward(be, &box, target, weight);
    loss_job job = {.batch = batch, .chunks_per_image = chunks, .plane = plane,
                    .logits = logits, .target = target, .weight = weight,
                    .partials = partials};
    cx_parallel_for((int64_t)batch * chunks, 1, forward_chunks, &job);
    for (int b = 0; b < batch; b++) {
        double total[4] = {0.0, 0.0, 0.0, 0.0};
        for (int c = 0; c < chunks; c++)
            for (int j = 0; j < 4; j++)
                total[j] += partials[((size_t)b * chunks + c) * 4 + j];
        double wbce = total[1] / total[0];
        double wiou = 1.0 - (total[2] + 1.0) / (total[3] - total[2] + 1.0);
        loss[b] = (float)(wbce + wiou);
        for (int j = 0; j < 4; j++)
            sums[(size_t)b * 4 + j] = (float)total[j];
    }
}

static void backward_chunks(void *ctx, int64_t begin, int64_t end) {
    const loss_job *job = ctx;
    for (int64_t task = begin; task < end; task++) {
        size_t b = (size_t)(task / job->chunks_per_image);
        size_t start = (size_t)(task % job->chunks_per_image) * CHUNK;
        size_t stop = start + CHUNK < job->plane ? start + CHUNK : job->plane;
        const float *x = job->logits + b * job->plane, *y = job->target + b * job->plane;
        const float *weight = job->weight + b * job->plane, *s = job->sums + b * 4;
        float *dx = job->dlogits + b * job->plane;
        double dloss = job->dloss[b];
        double sum_w = s[0], inter = s[2], uni = s[3];
        double num = inter + 1.0, den = uni - inter + 1.0;
        double bce_scale = dloss / sum_w, iou_scale = dloss / (den * den);
        for (size_t i = start; i < stop; i++) {
            double wgt = weight[i], yi = y[i], xi = x[i], p = sigmoid_from(xi, exp(-fabs(xi)));
            double grad = wgt * ((p - yi) * bce_scale +
                                 p * (1.0 - p) * (num - yi * (den + num)) * iou_scale);
            dx[i] += (float)grad;
        }
    }
}

void cpu_structure_loss_backward(cx_backend *be, int batch, int h, int w, const float *logits,
                                 const float *target, const float *saved, const float *dloss,
                                 float *dlogits) {
    size_t plane = (size_t)h * w;
    if (!dlogits || batch < 1 || plane == 0)
        return;
    int chunks = (int)((plane + CHUNK - 1) / CHUNK);
    loss_job job = {.batch = batch, .chunks_per_image = chunks, .plane = plane,
                    .logits = logits, .target = target, .weight = (float *)saved,
                    .sums = saved + (size_t)batch * plane, .dloss = dloss, .dlogits = dlogits};
    cx_parallel_for((int64_t)batch * chunks, 1, backward_chunks, &job);
}
