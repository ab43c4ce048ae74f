"""PyTorch twin of the codext COD model, loss and training recipe (docs/model.md, docs/training.md).

This file IS the spec made executable: the C model must match it. Needs torch and timm (not
needed at test time). Parameter names are the C side's names, in this order:
  backbone.<timm name>          timm's EdgeNeXt(**CONFIGS[cfg], num_classes=0), head removed
  neck.{i}.proj.{conv,norm}.*   i = 0..3, 0 = stride 4
  neck.{i}.moe.gate.*           Linear D -> E, zero init
  neck.{i}.moe.experts.{e}.*    type = e mod 7 (texture, local, edge, frequency, contrast,
                                context, attention), per-type names below
  decoder.fuse.{k}.{conv1,norm1,conv2,norm2}.*  k = 0,1,2 (fuse.k makes d at neck scale k)
  decoder.heads.{k}.*           k = 0..3 (heads.0 = the design's p1, the prediction; heads.3 = p4)
Expert parameters: texture dw.{0..3}, pw, norm; local dw, pw, norm; edge edge, pw, norm;
frequency pw, norm; contrast pw, gate.fc1, gate.fc2; context pools.{0,1,2}, pw, norm;
attention norm, xca.temperature, xca.qkv, xca.proj (timm's CrossCovarianceAttn, 4 heads).

Interpretations of the design (everything docs/model.md leaves open is decided here):
 1. Convs and linears outside the backbone have biases. LayerNorm2d = timm's (normalise each
    pixel over C, eps 1e-6, two-pass variance as torch does); every LayerNorm has eps 1e-6.
    GELU is the exact erf form everywhere.
 2. proj = 1x1 conv + LayerNorm2d, no activation after it. z = proj(f_i).
 3. Gate: g = softmax(gate(GAP(z))), GAP = mean over H, W of z (the proj output), per image.
 4. Mixture: mix = 0 + sum over experts in increasing index e of w_e * expert_e(z), added left
    to right; z' = z + mix. Dense: w = g. Sparse (moe_top_k = k >= 1): the k largest g per image,
    ties going to the lower expert index (stable descending sort); w_e = g_e / sum of the k
    chosen g (gradient flows through both g's), w_e = 0 and expert e is not run for images that
    did not choose it (running an expert on a subset of images equals running it on all: every
    expert works per image). The choice itself has no gradient. moe_top_k = 0 means dense;
    top_k == E is mathematically dense (renormalising divides by 1).
 5. Balance (sparse only), per neck scale: E * sum_e f_e * P_e, f_e = (number of (image, slot)
    pairs choosing e) / (N * k) (a constant, no gradient), P_e = mean over the N images of g_e.
    The model's balance = SUM over the 4 neck scales (Switch Transformer adds each MoE layer's
    auxiliary loss with the same coefficient); 1.0 per scale at perfect balance.
 6. Experts (all avgpools: stride 1, padding k // 2, count_include_pad=False -- the design says so
    for frequency; contrast follows the same rule):
    texture   gelu(norm(pw(dw.0(z) + dw.1(z) + dw.2(z) + dw.3(z)))), dw.j depthwise 3x3 with
              dilation = padding = 1, 2, 4, 8 (summed in that order).
    local     gelu(norm(pw(dw(z)))), dw depthwise 7x7 pad 3.
    edge      gelu(norm(pw(edge(z)))), edge = Conv2d(D, 3D, 3, pad 1, groups=D); init: output
              3c = Sobel-x [[-1,0,1],[-2,0,2],[-1,0,1]], 3c+1 = Sobel-y [[-1,-2,-1],[0,0,0],
              [1,2,1]], 3c+2 = Laplacian [[0,1,0],[1,-4,1],[0,1,0]] (rows = kernel y), bias 0.
    frequency a3 = avgpool3(z), a7 = avgpool7(z); gelu(norm(pw(cat[a3, a7 - a3, z - a7]))).
    contrast  y = pw(cat[z - avgpool3(z), z - avgpool9(z)]); a = sigmoid(gate.fc2(gelu(
              gate.fc1(GAP(y))))) (GAP of y, the pw output: squeeze-excitation on the result);
              returns y * a (per image and channel). D/4 hidden units.
    context   c_o = up(pools.j(adaptive_avgpool(z, o)), H x W) for (j, o) = (0,1), (1,2), (2,4)
              (1x1 conv D -> D/4 on the pooled map, then bilinear); gelu(norm(pw(cat[z, c_1, c_2,
              c_4]))) -- z first, then pools 1, 2, 4.
    attention t = z as tokens (N, H*W, D), token n = h*W + w; t = xca(norm(t)) (nn.LayerNorm(D));
              back to (N, D, H, W). XCA: timm's (qkv bias, 4 heads, temperature [4,1,1]).
    Expert e uses type e mod 7 (E > 7 cycles).
 7. Decoder: up(x, size) = F.interpolate(x, size, bilinear, align_corners=False) to the spatial
    size of the target map (an exact 2x when the input is a multiple of 32). With necks n_k:
    d = n_3, p_3 = heads.3(d); for k = 2, 1, 0: r = 1 - sigmoid(up(p_{k+1}, size_k)) (computed
    on the native-resolution logits), m = n_k * (1 + r) (r broadcast over channels),
    d = fuse.k(cat[up(d, size_k), m]), p_k = heads.k(d). fuse.k = gelu(norm2(conv2(gelu(
    norm1(conv1(.)))))), 3x3 pad 1 convs. Outputs: logits p_k upsampled to the input size
    (preds[0] = the prediction, preds[1..3] = deep supervision).
 8. Structure loss per output, per image: w = 1 + 5 |avgpool31(y) - y| (stride 1, padding 15,
    count_include_pad=True); bce = torch's binary_cross_entropy_with_logits (reduction none,
    = max(x,0) - x y + log(1 + exp(-|x|))); wbce = sum(w bce) / sum(w); p = sigmoid(x);
    inter = sum(w p y), union = sum(w (p + y)); wiou = 1 - (inter + 1) / (union - inter + 1)
    (sums over H, W of each image); loss = mean over images of (wbce + wiou).
    Total = L_0 + ds_weight * (L_1 + L_2 + L_3) [+ balance_weight * balance in sparse mode],
    ds_weight 0.5, balance_weight 0.01 by default.
 9. AdamW = torch.optim.AdamW (betas 0.9/0.999, eps 1e-8, amsgrad off, step count from 1,
    decoupled decay p *= 1 - lr*wd before the moment update). Weight decay 1e-4 on every
    parameter except: ndim <= 1 (all biases, all LayerNorm weights, gamma, gamma_xca),
    names ending in "temperature" (backbone and attention-expert xca.temperature), and the
    gate ("neck.{i}.moe.gate.weight" / ".bias"). Edge filters, pos_embd projection and all
    other conv / linear weights decay. make_cod_reference checks this name rule against the
    module types.
10. Stages: stage 1 (steps 0 .. S1-1) sets requires_grad False on every backbone.* parameter
    (no graph is built through the backbone, so no backward through it) and optimises the rest
    at lr; stage 2 trains all, non-backbone at stage2_lr, backbone at stage2_lr *
    backbone_lr_mult. Each stage starts a fresh AdamW (moments and step count zero) and a fresh
    schedule over that stage's number of optimizer steps (s = step index within the stage).
    Per-parameter lr = base_lr(group) * schedule; param groups in order [head decay, head
    no-decay, backbone decay, backbone no-decay] (head = neck + decoder), empty groups dropped.
11. OneCycle = torch's OneCycleLR formula (pct_start 0.1, cos, div 25, final div 1e4, no momentum
    cycling), per group max_lr = its base lr: phase ends e1 = float(0.1 * T) - 1 and T - 1;
    phase 1 initial -> max, phase 2 max -> max/25/1e4, lr = end + (start - end)/2 *
    (cos(pi * pct) + 1), pct = (s - phase_start)/(phase_end - phase_start). Where torch divides
    0 by 0 (a zero-width phase: T = 10 gives e1 = 0.0, and torch raises ZeroDivisionError)
    pct = 0, so step 0 runs at max/25 like every other T. Cosine: s < W: base * (s+1) / W;
    else base_min + (base - base_min) * (1 + cos(pi * q)) / 2, q = (s - W) / (T - 1 - W)
    (q = 1 when T - 1 - W <= 0), base_min = min_lr * base / stage_lr (the whole schedule is a
    factor on each group's base lr); W = warmup steps (each stage), clamped to T.
12. Clipping: torch.nn.utils.clip_grad_norm_ over the trainable parameters (stage 1: not the
    backbone), max norm 0.5: n = sqrt(sum of squares), grads *= min(1, 0.5 / (n + 1e-6)).
13. Accumulation: each of the A micro-batches adds grad(loss_micro / A); the reported loss is
    the mean of the micro-batch losses. One optimizer step per A micro-batches.
14. EMA: shadow = copy of every parameter (backbone included) at construction; after optimizer
    step t (t = 0, 1, ... counted over the whole run, NOT reset at stage 2; equals the number of
    earlier EMA updates) d = min(ema_decay, (1 + t) / (10 + t)) (Python double) and
    shadow = d * shadow + (1 - d) * param.
15. Init outside the backbone: torch defaults (kaiming-uniform a=sqrt(5): U(+-1/sqrt(fan_in))
    for weights and biases of convs/linears), LayerNorm weight 1 bias 0, XCA temperature 1,
    gate weight and bias 0, edge filters as in 6. The backbone keeps timm's init.
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from timm.models.edgenext import CrossCovarianceAttn, EdgeNeXt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_weights import CONFIGS  # noqa: E402

EXPERT_TYPES = ("texture", "local", "edge", "frequency", "contrast", "context", "attention")
XCA_HEADS = 4
LN_EPS = 1e-6


def up(x, size):
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def avgpool(x, k):
    return F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)


# ----------------------------------------------------------------------------- experts
class TextureExpert(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.dw = nn.ModuleList([nn.Conv2d(d, d, 3, padding=r, dilation=r, groups=d) for r in (1, 2, 4, 8)])
        self.pw = nn.Conv2d(d, d, 1)
        self.norm = LayerNorm2d(d, eps=LN_EPS)

    def forward(self, z):
        s = self.dw[0](z)
        for conv in self.dw[1:]:
            s = s + conv(z)
        return F.gelu(self.norm(self.pw(s)))


class LocalExpert(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.dw = nn.Conv2d(d, d, 7, padding=3, groups=d)
        self.pw = nn.Conv2d(d, d, 1)
        self.norm = LayerNorm2d(d, eps=LN_EPS)

    def forward(self, z):
        return F.gelu(self.norm(self.pw(self.dw(z))))


SOBEL_X = ((-1., 0., 1.), (-2., 0., 2.), (-1., 0., 1.))
SOBEL_Y = ((-1., -2., -1.), (0., 0., 0.), (1., 2., 1.))
LAPLACIAN = ((0., 1., 0.), (1., -4., 1.), (0., 1., 0.))


class EdgeExpert(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.edge = nn.Conv2d(d, 3 * d, 3, padding=1, groups=d)
        self.pw = nn.Conv2d(3 * d, d, 1)
        self.norm = LayerNorm2d(d, eps=LN_EPS)
        with torch.no_grad():
            k = torch.tensor((SOBEL_X, SOBEL_Y, LAPLACIAN))  # [3, 3, 3]
            self.edge.weight.copy_(k.repeat(d, 1, 1).unsqueeze(1))  # output 3c + j gets k[j]
            self.edge.bias.zero_()

    def forward(self, z):
        return F.gelu(self.norm(self.pw(self.edge(z))))


class FrequencyExpert(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.pw = nn.Conv2d(3 * d, d, 1)
        self.norm = LayerNorm2d(d, eps=LN_EPS)

    def forward(self, z):
        a3, a7 = avgpool(z, 3), avgpool(z, 7)
        return F.gelu(self.norm(self.pw(torch.cat([a3, a7 - a3, z - a7], 1))))


class ChannelGate(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc1 = nn.Linear(d, d // 4)
        self.fc2 = nn.Linear(d // 4, d)

    def forward(self, y):  # y [N, D, H, W] -> [N, D, 1, 1]
        return torch.sigmoid(self.fc2(F.gelu(self.fc1(y.mean((2, 3))))))[:, :, None, None]


class ContrastExpert(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.pw = nn.Conv2d(2 * d, d, 1)
        self.gate = ChannelGate(d)

    def forward(self, z):
        y = self.pw(torch.cat([z - avgpool(z, 3), z - avgpool(z, 9)], 1))
        return y * self.gate(y)


class ContextExpert(nn.Module):
    SIZES = (1, 2, 4)

    def __init__(self, d):
        super().__init__()
        self.pools = nn.ModuleList([nn.Conv2d(d, d // 4, 1) for _ in self.SIZES])
        self.pw = nn.Conv2d(d + 3 * (d // 4), d, 1)
        self.norm = LayerNorm2d(d, eps=LN_EPS)

    def forward(self, z):
        parts = [z]
        for o, conv in zip(self.SIZES, self.pools):
            parts.append(up(conv(F.adaptive_avg_pool2d(z, o)), z.shape[2:]))
        return F.gelu(self.norm(self.pw(torch.cat(parts, 1))))


class AttentionExpert(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(d, eps=LN_EPS)
        self.xca = CrossCovarianceAttn(d, num_heads=XCA_HEADS, qkv_bias=True)

    def forward(self, z):
        n, d, h, w = z.shape
        t = z.flatten(2).transpose(1, 2)  # [N, H*W, D]
        t = self.xca(self.norm(t))
        return t.transpose(1, 2).reshape(n, d, h, w)


EXPERT_CLASSES = (TextureExpert, LocalExpert, EdgeExpert, FrequencyExpert, ContrastExpert,
                  ContextExpert, AttentionExpert)


# ----------------------------------------------------------------------------- MoE, neck, decoder
class MoE(nn.Module):
    def __init__(self, d, num_experts, top_k=0):
        super().__init__()
        if not 0 <= top_k <= num_experts:
            raise ValueError(f"moe_top_k {top_k} not in [0, {num_experts}]")
        self.num_experts, self.top_k = num_experts, top_k
        self.gate = nn.Linear(d, num_experts)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        self.experts = nn.ModuleList([EXPERT_CLASSES[e % 7](d) for e in range(num_experts)])

    def forward(self, z):
        """z [N, D, H, W] -> (z' [N, D, H, W], info dict: probs [N, E], weights [N, E],
        and in sparse mode chosen [N, k] (expert ids, gate order), balance (scalar))."""
        probs = torch.softmax(self.gate(z.mean((2, 3))), dim=1)
        n, e_count = probs.shape
        mix = torch.zeros_like(z)
        if self.top_k == 0:
            for e, expert in enumerate(self.experts):
                mix = mix + probs[:, e].view(n, 1, 1, 1) * expert(z)
            return z + mix, {"probs": probs, "weights": probs}
        k = self.top_k
        chosen = torch.sort(probs.detach(), dim=1, descending=True, stable=True).indices[:, :k]
        top = probs.gather(1, chosen)
        weights = torch.zeros_like(probs).scatter(1, chosen, top / top.sum(1, keepdim=True))
        for e, expert in enumerate(self.experts):
            rows = (chosen == e).any(1).nonzero().flatten()
            if rows.numel() == 0:
                continue
            y = expert(z.index_select(0, rows))
            mix = mix.index_add(0, rows, weights[rows, e].view(-1, 1, 1, 1) * y)
        frac = torch.stack([(chosen == e).sum() for e in range(e_count)]).to(z.dtype) / (n * k)
        balance = e_count * (frac * probs.mean(0)).sum()
        return z + mix, {"probs": probs, "weights": weights, "chosen": chosen, "balance": balance}


class Proj(nn.Module):
    def __init__(self, c, d):
        super().__init__()
        self.conv = nn.Conv2d(c, d, 1)
        self.norm = LayerNorm2d(d, eps=LN_EPS)

    def forward(self, x):
        return self.norm(self.conv(x))


class NeckScale(nn.Module):
    def __init__(self, c, d, num_experts, top_k):
        super().__init__()
        self.proj = Proj(c, d)
        self.moe = MoE(d, num_experts, top_k)

    def forward(self, f):
        return self.moe(self.proj(f))


class Fuse(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.conv1 = nn.Conv2d(2 * d, d, 3, padding=1)
        self.norm1 = LayerNorm2d(d, eps=LN_EPS)
        self.conv2 = nn.Conv2d(d, d, 3, padding=1)
        self.norm2 = LayerNorm2d(d, eps=LN_EPS)

    def forward(self, x):
        return F.gelu(self.norm2(self.conv2(F.gelu(self.norm1(self.conv1(x))))))


class Decoder(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fuse = nn.ModuleList([Fuse(d) for _ in range(3)])
        self.heads = nn.ModuleList([nn.Conv2d(d, 1, 1) for _ in range(4)])

    def forward(self, necks):
        """necks: 4 maps [N, D, H/s, W/s], s = 4, 8, 16, 32 -> (logits [4 x [N,1,H/s,W/s]], d maps)."""
        d = necks[3]
        logits, ds = [None] * 4, [None] * 4
        ds[3], logits[3] = d, self.heads[3](d)
        for k in (2, 1, 0):
            size = necks[k].shape[2:]
            r = 1 - torch.sigmoid(up(logits[k + 1], size))
            m = necks[k] * (1 + r)
            d = self.fuse[k](torch.cat([up(d, size), m], 1))
            ds[k], logits[k] = d, self.heads[k](d)
        return logits, ds


class CODModel(nn.Module):
    """EdgeNeXt backbone + MoE neck + reverse-attention decoder.

    backbone: a name in reference_weights.CONFIGS or a dict of EdgeNeXt keyword arguments.
    forward(x [N,3,H,W], H and W multiples of 32) -> dict with
      preds: [4 x [N,1,H,W]] logits at the input size (preds[0] = prediction),
      logits: the same at native resolution (strides 4..32), feats (backbone), projs (proj
      outputs z), necks (MoE outputs z'), decs (decoder maps d; decs[3] = necks[3]),
      moe: per-scale info dicts (probs, weights, chosen, balance), balance: sum over scales
      (sparse mode) or None.
    """

    def __init__(self, backbone="edgenext_tiny_test", decoder_dim=64, num_experts=7, moe_top_k=0,
                 drop_path_rate=0.0):
        super().__init__()
        cfg = CONFIGS[backbone] if isinstance(backbone, str) else dict(backbone)
        if decoder_dim % 4 or decoder_dim % XCA_HEADS:
            raise ValueError(f"decoder_dim {decoder_dim} must be a multiple of 4")
        if num_experts < 1:
            raise ValueError(f"num_experts {num_experts} < 1")
        self.cfg, self.decoder_dim, self.num_experts, self.moe_top_k = cfg, decoder_dim, num_experts, moe_top_k
        self.backbone = EdgeNeXt(**cfg, num_classes=0, drop_path_rate=drop_path_rate)
        self.backbone.head = nn.Identity()  # no head.* parameters; norm_pre is Identity already
        self.neck = nn.ModuleList([NeckScale(c, decoder_dim, num_experts, moe_top_k) for c in cfg["dims"]])
        self.decoder = Decoder(decoder_dim)

    def features(self, x):
        x = self.backbone.stem(x)
        feats = []
        for stage in self.backbone.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x):
        if x.shape[2] % 32 or x.shape[3] % 32:
            raise ValueError(f"input size {tuple(x.shape[2:])} is not a multiple of 32")
        feats = self.features(x)
        projs, necks, infos = [], [], []
        for f, scale in zip(feats, self.neck):
            projs.append(scale.proj(f))
            z, info = scale.moe(projs[-1])
            necks.append(z)
            infos.append(info)
        logits, decs = self.decoder(necks)
        preds = [up(p, x.shape[2:]) for p in logits]
        balance = None
        if self.moe_top_k:
            balance = infos[0]["balance"] + infos[1]["balance"] + infos[2]["balance"] + infos[3]["balance"]
        return {"preds": preds, "logits": logits, "feats": feats, "projs": projs, "necks": necks, "decs": decs,
                "moe": infos, "balance": balance}


# ----------------------------------------------------------------------------- loss
def structure_loss(logits, mask):
    """logits, mask [N,1,H,W] -> (loss = mean over images of wbce + wiou, wbce [N], wiou [N])."""
    w = 1 + 5 * (F.avg_pool2d(mask, 31, stride=1, padding=15, count_include_pad=True) - mask).abs()
    bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    wbce = (w * bce).sum((2, 3)) / w.sum((2, 3))
    p = torch.sigmoid(logits)
    inter = (w * p * mask).sum((2, 3))
    union = (w * (p + mask)).sum((2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean(), wbce[:, 0], wiou[:, 0]


def cod_loss(out, mask, ds_weight=0.5, balance_weight=0.01):
    """Total loss and its parts (dict: per output k: loss{k}, wbce{k} [N], wiou{k} [N]; balance)."""
    parts = {}
    losses = []
    for k, p in enumerate(out["preds"]):
        loss, wbce, wiou = structure_loss(p, mask)
        losses.append(loss)
        parts[f"loss{k}"], parts[f"wbce{k}"], parts[f"wiou{k}"] = loss, wbce, wiou
    total = losses[0] + ds_weight * (losses[1] + losses[2] + losses[3])
    if out["balance"] is not None:
        parts["balance"] = out["balance"]
        total = total + balance_weight * out["balance"]
    parts["total"] = total
    return total, parts


# ----------------------------------------------------------------------------- recipe
def is_backbone(name):
    return name.startswith("backbone.")


def no_weight_decay(name, p):
    """Interpretation 9: biases, norm weights, gammas (all ndim <= 1), temperatures, the gate."""
    return p.ndim <= 1 or name.endswith("temperature") or ".moe.gate." in name


def param_groups(model, stage, lr, stage2_lr, backbone_lr_mult=0.1, weight_decay=1e-4):
    """AdamW groups for a stage (1 or 2); each group carries base_lr (its schedule's peak)."""
    spec = [("head", False), ("head", True)]
    if stage == 2:
        spec += [("backbone", False), ("backbone", True)]
    groups = []
    for part, nd in spec:
        params = [p for n, p in model.named_parameters()
                  if (is_backbone(n) == (part == "backbone")) and no_weight_decay(n, p) == nd]
        if not params:
            continue
        base = lr if stage == 1 else stage2_lr * (backbone_lr_mult if part == "backbone" else 1.0)
        groups.append({"params": params, "weight_decay": 0.0 if nd else weight_decay, "base_lr": base,
                       "lr": base, "part": part})
    return groups


def onecycle_lr(step, total_steps, max_lr, pct_start=0.1, div_factor=25.0, final_div_factor=1e4):
    """torch.optim.lr_scheduler.OneCycleLR's lr at `step` (0-based) with anneal cos; a zero-width
    phase (torch: ZeroDivisionError) uses pct = 0."""
    if not 0 <= step < total_steps:
        raise ValueError(f"step {step} outside a schedule of {total_steps} steps")
    initial = max_lr / div_factor
    phases = [(float(pct_start * total_steps) - 1, initial, max_lr),
              (total_steps - 1, max_lr, initial / final_div_factor)]
    start = 0
    for i, (end, lr_from, lr_to) in enumerate(phases):
        if step <= end or i == len(phases) - 1:
            pct = (step - start) / (end - start) if end != start else 0.0
            return lr_to + (lr_from - lr_to) / 2.0 * (math.cos(math.pi * pct) + 1)
        start = end
    raise AssertionError("unreachable")


def cosine_warmup_lr(step, total_steps, warmup_steps, base_lr, min_lr):
    """Linear warmup (s+1)/W then cosine from base_lr to min_lr at the stage's last step."""
    if not 0 <= step < total_steps:
        raise ValueError(f"step {step} outside a schedule of {total_steps} steps")
    warmup_steps = min(warmup_steps, total_steps)
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = total_steps - 1 - warmup_steps
    q = (step - warmup_steps) / span if span > 0 else 1.0
    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * q)) / 2


class EMA:
    """Interpretation 14. shadow: dict name -> tensor (same dtype as the parameter)."""

    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.updates = 0
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model):
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for n, p in model.named_parameters():
            self.shadow[n].mul_(d).add_(p.detach(), alpha=1 - d)
        self.updates += 1
        return d


class Trainer:
    """The recipe of docs/training.md on a CODModel, one optimizer step per call of step().

    stage1_steps + stage2_steps optimizer steps; scheduler "onecycle" or "cosine" (then
    warmup_steps per stage and min_lr). step(micro_batches) takes a list of (x, y) pairs
    (gradient accumulation over them) and returns a dict: loss, lr_head, lr_backbone (0 in
    stage 1), grad_norm (before clipping), ema_decay, stage.
    """

    def __init__(self, model, stage1_steps, stage2_steps, lr=2.5e-4, stage2_lr=None, backbone_lr_mult=0.1,
                 weight_decay=1e-4, betas=(0.9, 0.999), eps=1e-8, grad_clip=0.5, ema_decay=0.999,
                 scheduler="onecycle", warmup_steps=0, min_lr=1e-6, ds_weight=0.5, balance_weight=0.01):
        if scheduler not in ("onecycle", "cosine"):
            raise ValueError(f"scheduler {scheduler!r}")
        self.model = model
        self.stage_steps = {1: stage1_steps, 2: stage2_steps}
        self.lr, self.stage2_lr = lr, lr if stage2_lr is None else stage2_lr
        self.backbone_lr_mult, self.weight_decay = backbone_lr_mult, weight_decay
        self.betas, self.eps, self.grad_clip = betas, eps, grad_clip
        self.scheduler, self.warmup_steps, self.min_lr = scheduler, warmup_steps, min_lr
        self.ds_weight, self.balance_weight = ds_weight, balance_weight
        self.ema = EMA(model, ema_decay)
        self.step_count = 0
        self.stage, self.stage_start, self.optimizer = None, 0, None

    def _begin_stage(self, stage):
        for n, p in self.model.named_parameters():
            if is_backbone(n):
                p.requires_grad_(stage == 2)
        groups = param_groups(self.model, stage, self.lr, self.stage2_lr, self.backbone_lr_mult, self.weight_decay)
        self.optimizer = torch.optim.AdamW(groups, lr=groups[0]["lr"], betas=self.betas, eps=self.eps,
                                           weight_decay=self.weight_decay, foreach=False)
        self.stage, self.stage_start = stage, self.step_count

    def lr_at(self, base_lr, s, total):
        if self.scheduler == "onecycle":
            return onecycle_lr(s, total, base_lr)
        stage_lr = self.lr if self.stage == 1 else self.stage2_lr
        return cosine_warmup_lr(s, total, self.warmup_steps, base_lr, self.min_lr * base_lr / stage_lr)

    def step(self, micro_batches):
        total_steps = self.stage_steps[1] + self.stage_steps[2]
        if self.step_count >= total_steps:
            raise ValueError("all steps done")
        want = 1 if self.step_count < self.stage_steps[1] else 2
        if self.stage != want:
            self._begin_stage(want)
        s = self.step_count - self.stage_start
        lrs = {"head": 0.0, "backbone": 0.0}
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr_at(g["base_lr"], s, self.stage_steps[self.stage])
            lrs[g["part"]] = g["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        losses = []
        for x, y in micro_batches:
            out = self.model(x)
            loss, _ = cod_loss(out, y, self.ds_weight, self.balance_weight)
            (loss / len(micro_batches)).backward()
            losses.append(loss.item())
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if self.grad_clip and self.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.grad_clip))
        else:
            grad_norm = float(torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
        self.optimizer.step()
        decay = self.ema.update(self.model)
        self.step_count += 1
        return {"loss": sum(losses) / len(losses), "lr_head": lrs["head"], "lr_backbone": lrs["backbone"],
                "grad_norm": grad_norm, "ema_decay": decay, "stage": self.stage}
