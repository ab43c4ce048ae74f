/* The structure loss of the COD decoder on the GPU, host side; semantics in
 * ops/op_list.h, the reference in csrc/cpu/loss.c, which this follows. Per image b
 * (plane of h*w pixels, logits x, target y):
 *   weight = 1 + 5 |avgpool31(y) - y|    (stride 1, pad 15, count_include_pad)
 *   p = sigmoid(x), bce = max(x, 0) - x y + log1p(exp(-|x|))       (double)
 *   S_w, S_bce, I, U = sums of weight, weight*bce, weight*p*y, weight*(p + y)  (double)
 *   loss[b] = S_bce / S_w + 1 - (I + 1) / (U - I + 1)
 * saved: the weight map [batch, h*w], then [batch, 4] = (S_w, S_bce, I, U) as float
 * (the layout is the CPU's: the model reads the sums).
 *
 * Forward, three launches:
 *   1. loss_box_rows_kernel: each pixel's 31-wide row window sum of the target, in
 *      double (scratch slot 0, [batch, h*w] doubles);
 *   2. loss_forward_partials_kernel, blocks of LOSS_CHUNK pixels of one image: the column
 *      window sums of (1) times 1/count_h * 1/count_w (the CPU's divisor, in double),
 *      rounded to float as the CPU's avgpool2d; the weight map; the chunk's four sums by
 *      a fixed tree (slot 1, [batch, chunks, 4] doubles);
 *   3. loss_finish_kernel: the chunks of each image in order; loss and sums.
 * The CPU pools with double prefix sums instead of direct window sums: with a target in
 * {0, 1} (what the op takes) every window sum is an exact integer either way, so the
 * weight map is the CPU's bit for bit; the four sums differ from the CPU's only in the
 * order of double additions. Backward: one pointwise kernel, in double, from the saved
 * float sums as the CPU does. */
#include "common.cuh"
#include "device/loss.cuh"

#define LOSS_GRID_LIMIT 65535 /* grid y: the batch */

void cu_structure_loss_forward(cx_backend *be, int batch, int h, int w, const float *logits,
                               const float *target, float *loss, float *saved) {
    cu_state *st = cu_get(be);
    const size_t plane = (size_t)(h > 0 ? h : 0) * (size_t)(w > 0 ? w : 0);
    if (batch < 1 || plane == 0)
        return;
    if (batch > LOSS_GRID_LIMIT) {
        cu_record(st, CX_EINVAL, "structure_loss_forward: batch %d exceeds %d", batch,
                  LOSS_GRID_LIMIT);
        return;
    }
    const size_t n = (size_t)batch * plane;
    const unsigned chunks = (unsigned)cu_ceil_div(plane, LOSS_CHUNK);
    double *rows = (double *)cu_scratch(st, 0, 2 * n);
    double *partials = (double *)cu_scratch(st, 1, 2 * 4 * (size_t)batch * chunks);
    if (!rows || !partials)
        return;
    float *weight = saved, *sums = saved + n;
    CX_LAUNCH(loss_box_rows_kernel, cu_blocks(n, LOSS_BLOCK), LOSS_BLOCK, 0, st->stream)(
        n, w, target, rows);
    if (!cu_ok_launch(st, "structure_loss_forward (box filter)"))
        return;
    CX_LAUNCH(loss_forward_partials_kernel, dim3(chunks, (unsigned)batch), LOSS_BLOCK, 0,
              st->stream)(h, w, logits, target, rows, weight, partials);
    if (!cu_ok_launch(st, "structure_loss_forward (sums)"))
        return;
    CX_LAUNCH(loss_finish_kernel, (unsigned)cu_ceil_div((size_t)batch, LOSS_BLOCK), LOSS_BLOCK,
              0, st->stream)(batch, (int)chunks, partials, loss, sums);
    cu_ok_launch(st, "structure_loss_forward (loss)");
}

void cu_structure_loss_backward(cx_backend *be, int batch, int h, int w, const float *logits,
                                const float *target, const float *saved, const float *dloss,
                                float *dlogits) {
    cu_state *st = cu_get(be);
    const size_t plane = (size_t)(h > 0 ? h : 0) * (size_t)(w > 0 ? w : 0);
    if (!dlogits || batch < 1 || plane == 0)
        return;
    const size_t n = (size_t)batch * plane;
    CX_LAUNCH(loss_backward_kernel, cu_blocks(n, LOSS_BLOCK), LOSS_BLOCK, 0, st->stream)(
        plane, n, logits, target, saved, saved + n, dloss, dlogits);
    cu_ok_launch(st, "structure_loss_backward");
}
