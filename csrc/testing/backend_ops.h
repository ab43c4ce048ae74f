/* Test access to single ops on any backend (backend_ops.c): the CPU backend or a CUDA
 * one, through the backend's table. Test code only: nothing below csrc/testing or the
 * test bindings includes this. */
#ifndef CX_BACKEND_OPS_H
#define CX_BACKEND_OPS_H

#include "../ops/ops.h"
#include "op_call.h"

/* ---- test access: single ops on any backend ----------------------------------------
 * Runs one op of `be` (the CPU backend or a CUDA one) by name, with the calling
 * convention of op_call.h: host inputs in call->in, host outputs from call->alloc_out.
 * Inputs are uploaded with be->alloc/upload, outputs downloaded, then be->sync reports
 * any device error. The names and their arguments:
 *   gelu, sigmoid         [x]                      -> [y]       (backward: [x, dy] -> [dx])
 *   add                   [a, b]                   -> [a + b]   (forward only)
 *   axpy                  [x, y], fargs [alpha]    -> [y + alpha*x] (forward only)
 *   mul                   [a, b]                   -> [a*b]     (backward: [a, b, dy] -> [da, db])
 *   affine                [x], fargs [alpha, beta] -> [alpha*x + beta] (forward only)
 *   layernorm             [x [rows, cols], weight [cols], bias [cols]], fargs [eps]
 *                         -> [y, saved [2, rows] (mean, 1/std)]
 *   layernorm2d           [x [batch, channels, ...spatial], weight, bias], fargs [eps]
 *                         -> [y, saved [2, batch*hw]]
 *   linear                [x [rows, in], w [out, in], bias [out] or empty] -> [y]
 *   conv2d                [x [B, Cin, H, W], w [Cout, Cin/groups, kh, kw], bias [Cout] or
 *                         empty], iargs [stride, pad_h, pad_w, dilation, groups] -> [y]
 * Backward calls take the forward inputs, then one gradient per forward output (for
 * layernorm and layernorm2d only dy: `saved` is recomputed on the device by a forward
 * call), then optionally one starting gradient per forward input, and return one
 * gradient per forward input. The starting gradients check accumulation: each returned
 * gradient is start + gradient. An empty starting gradient (size 0) passes NULL for that
 * gradient, which then comes back empty. An empty bias stands for NULL. */
cx_status cx_backend_op_run(cx_backend *be, const char *name, cx_op_call *call);
/* Calls fn(name, ctx) for each name cx_backend_op_run knows. */
void cx_backend_op_each(void (*fn)(const char *name, void *ctx), void *ctx);

#endif
