#!/usr/bin/env python3
"""PyTorch reference of `mocoop bench`: the same cases, sizes and JSON schema, written the way
the public CoOp/MoCoOp code bases train prompts.

What makes it "the public way" (and what the Rust implementation does differently):
- a prompt learner keeps, per expert, the token embeddings of every class's full 77-token prompt
  [SOS, context, class tokens, ".", EOT, padding] as a buffer and writes the learnable context
  into them every step;
- all E x C prompts go through the text encoder every step at their full 77 positions, and the
  EOT feature is taken at `argmax` of the token ids;
- AMP (torch.autocast, bf16 by default; fp16 with a GradScaler) on CUDA only.
The prompt assembly is vectorised (one index_put per step) instead of the per-class Python loop
some of those code bases use, so if anything this reference is faster than the originals.

`--eot-cut` is the best PyTorch rather than the code bases' way: every prompt buffer is cut after
the longest prompt's EOT (the positions after it cannot change any EOT feature under the causal
mask), as this project cuts its prompts (it also buckets them by length, which is not done here).
The ratio to each run shows what the cut is worth and what the framework is worth.

The one-prompt methods' cases, written as their official trainers do (CoOp's trainers/cocoop.py,
KgCoOp's trainers/kgcoop.py, ProGrad's trainers/prograd.py), on "a photo of a {}." (Caltech101's
hand-made prompt in both tables) with the official SGD (lr 0.002, no clipping):
- train-cocoop (batch 1) and train-cocoop-b8 (batch 8): the meta-net (Linear D -> D/16, ReLU,
  Linear D/16 -> width) shifts the context per image, and each image's C prompts go through the
  text encoder in a loop over the batch; cross-entropy;
- train-kgcoop: CE + 8 (1 - mean cos) to the hand-made prompt's frozen features;
- train-prograd: the distillation from zero-shot logits backward first (retain_graph), then CE's,
  and the CE gradient projected per parameter where the two point against each other.
- train-maple, as multimodal-prompt-learning's trainers/maple.py does it: 2 language tokens in
  place of "a photo" of "a photo of a {}.", deeper language tokens and one linear coupling
  (text width -> vision width) per depth to its depth 9 (at most the towers' layers, as the Rust
  case), each layer's tokens concatenated in place of the previous ones in front of every block
  (C full 77-token prompts; the visual tokens after the patches, before ln_pre); CE, SGD lr 0.0035.

The step: image features (ViT, LayerNorms ln_1/ln_2 trainable when LN tuning is on),
z = normalize(TextEncoder(prompts) + w), router on normalized image features, top-K gates, mixture
logits, L = CE + 5 L_text + 1 L_gate (the trainer's defaults, crates/train/src/config.rs), global
gradient-norm clipping at 1, SGD (lr 0.032, momentum 0.9, weight decay 5e-4; LayerNorms at 0.1x).

Usage: mocoop_step.py [--device cpu|cuda] [--geometry small|vit-b-16|tiny|rn50] [--cases a,b]
                      [--steps N] [--warmup N] [--threads N] [--breakdown] [--eot-cut]
                      [--json PATH]
Each case runs in a child process (`--case NAME`), so that its peak memory is its own.
"""

import argparse
import datetime
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
# The one-prompt methods' cases: (method, fixed batch or None for --batch).
ONE_PROMPT = {"train-cocoop": ("cocoop", 1), "train-cocoop-b8": ("cocoop", 8),
              "train-kgcoop": ("kgcoop", None), "train-prograd": ("prograd", None)}
CASES = ["train-ln", "train-no-ln", "train-imagenet", *ONE_PROMPT, "train-maple", "infer-cached",
         "encode-image"]
TRAINING = {"train-ln", "train-no-ln", "train-imagenet", *ONE_PROMPT, "train-maple"}
RECORD_PREFIX = "MOCOOP_BENCH_RECORD "
SCALED_IMAGENET_CLASSES = 100
TOP_K = 2
CONTEXT = 77
VOCAB = 49408
LR, LN_LR_SCALE, MOMENTUM, WEIGHT_DECAY, CLIP_NORM = 0.032, 0.1, 0.9, 5e-4, 1.0
LAMBDA_TEXT, LAMBDA_GATE, TAU = 5.0, 1.0, 1.0
OFFICIAL_LR, LAMBDA_KG, HAND_MADE = 0.002, 8.0, "a photo of a {}."
MAPLE_LR, MAPLE_CTX, MAPLE_DEPTH = 0.0035, 2, 9

# (embed_dim, vision (width, layers, heads, patch, image), text (width, layers, heads)):
# the same sizes as ClipConfig::vit_b_16, small, tiny and rn50 (crates/model/src/config.rs);
# rn50's layers are its ModifiedResNet's four stages (64-wide pooling heads, no patches).
GEOMETRIES = {
    "rn50": (1024, (64, [3, 4, 6, 3], 32, 32, 224), (512, 12, 8)),
    "vit-b-16": (512, (768, 12, 12, 16, 224), (512, 12, 8)),
    "small": (128, (192, 4, 3, 16, 224), (128, 4, 2)),
    "tiny": (16, (32, 1, 2, 8, 32), (32, 1, 2)),
}

ADJECTIVES = ["red", "green", "blue", "small", "large", "wooden", "striped", "old", "bright", "spotted"]
NOUNS = ["cat", "dog", "car", "tree", "house", "bird", "boat", "flower", "chair", "lamp"]
KINDS = ["toy", "sketch", "model", "statue", "painting", "photo", "drawing", "carving", "poster", "icon"]


def class_names(classes):
    """Three-word synthetic names, as crates/cli/src/bench_cmd/cases.rs makes them."""
    names = []
    for i in range(classes):
        name = f"{ADJECTIVES[i % 10]} {NOUNS[i // 10 % 10]} {KINDS[i // 100 % 10]}"
        names.append(f"{name} {i // 1000}" if i >= 1000 else name)
    return names


def expert_groups(experts):
    """Caltech101's five template groups for E = 5, else the first E of ImageNet's twenty."""
    with open(REPO / "assets" / "template-groups.toml", "rb") as fh:
        table = tomllib.load(fh)
    if experts == 5:
        return table["caltech101"]["groups"]
    groups = table["imagenet"]["groups"]
    if not 1 <= experts <= len(groups):
        sys.exit(f"--experts must be between 1 and {len(groups)}")
    return groups[:experts]


def case_spec(case, geometry, batch, classes, experts):
    note = None
    if case == "train-imagenet":
        scaled = geometry != "vit-b-16" and classes is None
        c = classes if classes is not None else (SCALED_IMAGENET_CLASSES if scaled else 1000)
        if scaled:
            note = (f"scaled: C = {c} instead of 1000 at the {geometry} geometry "
                    "(--classes 1000 for the full size)")
        e, c = experts if experts is not None else 20, c
    elif case in ONE_PROMPT or case == "train-maple":
        e, c = 1, 50
        batch = ONE_PROMPT.get(case, (None, None))[1] or batch
    else:
        e, c = 5, 50
    return dict(case=case, experts=e, classes=c, batch=batch,
                ln_tuning=case in ("train-ln", "train-imagenet"), note=note)


def build_clip(geometry, seed, device):
    """open_clip's CLIP class with its own random initialisation, QuickGELU, logit scale ln 100."""
    torch.manual_seed(seed)
    embed, (w, layers, heads, patch, size), (tw, tl, th) = GEOMETRIES[geometry]
    if isinstance(layers, list):
        vision_cfg = dict(image_size=size, layers=layers, width=w, head_width=64, patch_size=None)
    else:
        vision_cfg = dict(image_size=size, patch_size=patch, width=w, layers=layers,
                          head_width=w // heads, mlp_ratio=4.0)
    model = open_clip.CLIP(
        embed_dim=embed,
        vision_cfg=vision_cfg,
        text_cfg=dict(context_length=CONTEXT, vocab_size=VOCAB, width=tw, heads=th, layers=tl,
                      mlp_ratio=4.0),
        quick_gelu=True,
        init_logit_scale=math.log(100.0),
    )
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device).eval(), size


class TextEncoder(nn.Module):
    """CoOp's TextEncoder: embedded prompts + positions, causal transformer, EOT by argmax."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, prompts, token_ids):
        c = self.clip
        n = prompts.shape[1]  # 77, or less when the prompts were cut after their EOT
        x = prompts + c.positional_embedding[:n].to(prompts.dtype)
        x = c.transformer(x, attn_mask=c.attn_mask[:n, :n])
        x = c.ln_final(x)
        return x[torch.arange(x.shape[0]), token_ids.argmax(dim=-1)] @ c.text_projection


class PromptLearner(nn.Module):
    """One learnable context per expert (the token embeddings of its template's words around
    '{}'; the final period stays fixed), written into the full 77-token prompts of every class
    (with `eot_cut`, prompts as long as the longest one). No text bias when `text_bias_dim` is
    None."""

    def __init__(self, clip, templates, classnames, text_bias_dim, device, eot_cut=False):
        super().__init__()
        tok = open_clip.tokenizer._tokenizer
        sot, eot = tok.encoder["<start_of_text>"], tok.encoder["<end_of_text>"]
        emb = clip.token_embedding.weight
        class_ids = [tok.encode(name) for name in classnames]
        self.ctx = nn.ParameterList()
        rows, cols, ctx_index, all_ids = [], [], [], []
        offset = 0
        for expert, template in enumerate(templates):
            pre, post = template.split("{}")
            post = post.rstrip()
            period = post.endswith(".")
            post = post[:-1] if period else post
            before, after = tok.encode(pre), tok.encode(post)
            self.ctx.append(nn.Parameter(emb[torch.tensor(before + after, device=device)].clone()))
            for c, ids in enumerate(class_ids):
                seq = [sot] + before + ids + after + (tok.encode(".") if period else []) + [eot]
                if len(seq) > CONTEXT:
                    sys.exit(f"prompt of '{classnames[c]}' is longer than {CONTEXT} tokens")
                all_ids.append(seq + [0] * (CONTEXT - len(seq)))
                row = expert * len(class_ids) + c
                positions = list(range(1, 1 + len(before)))
                positions += list(range(1 + len(before) + len(ids), 1 + len(before) + len(ids) + len(after)))
                rows += [row] * len(positions)
                cols += positions
                ctx_index += list(range(offset, offset + len(positions)))
            offset += len(before) + len(after)
        if eot_cut:
            length = max(ids.index(eot) for ids in all_ids) + 1
            all_ids = [ids[:length] for ids in all_ids]
        self.register_buffer("token_ids", torch.tensor(all_ids, device=device))
        with torch.no_grad():
            self.register_buffer("token_embeddings", clip.token_embedding(self.token_ids))
        self.register_buffer("rows", torch.tensor(rows, device=device))
        self.register_buffer("cols", torch.tensor(cols, device=device))
        self.register_buffer("ctx_index", torch.tensor(ctx_index, device=device))
        self.text_bias = (nn.Parameter(torch.zeros(text_bias_dim, device=device))
                          if text_bias_dim is not None else None)
        self.experts, self.classes = len(templates), len(classnames)

    def embedded(self, ctx=None):
        """The embedded prompts [E * C, L, W] with the contexts (or `ctx`, all experts' rows
        concatenated: CoCoOp's shifted context) written in."""
        ctx = torch.cat(list(self.ctx), 0) if ctx is None else ctx
        return self.token_embeddings.index_put((self.rows, self.cols), ctx[self.ctx_index])

    def forward(self, text_encoder, ctx=None):
        """z [E, C, D] = normalize(TextEncoder(P_g(c)) + w)."""
        feats = text_encoder(self.embedded(ctx), self.token_ids)
        if self.text_bias is not None:
            feats = feats + self.text_bias
        return F.normalize(feats, dim=-1).reshape(self.experts, self.classes, -1)


@torch.no_grad()
def group_prototypes(clip, groups, classnames, device, chunk=1000):
    """p[g, c] = normalize(mean over the group's templates of normalize(encode_text(t(c))))."""
    protos = []
    for group in groups:
        feats = []
        for template in group:
            texts = [template.replace("{}", name) for name in classnames]
            parts = [clip.encode_text(open_clip.tokenize(texts[i:i + chunk]).to(device))
                     for i in range(0, len(texts), chunk)]
            feats.append(F.normalize(torch.cat(parts).float(), dim=-1))
        protos.append(F.normalize(torch.stack(feats).mean(0), dim=-1))
    return torch.stack(protos)  # [E, C, D]


def top_k_gates(r, k):
    top_val, top_idx = r.topk(k, dim=1)
    return torch.zeros_like(r).scatter(1, top_idx, top_val.softmax(dim=1))


def mixture_logits(f, z, gates, scale):
    t = torch.einsum("ne,ecd->ncd", gates, z.to(f.dtype))
    return scale * torch.einsum("nd,ncd->nc", f, t)


class MoCoOpStep:
    """Everything one training step needs, and the step itself."""

    def __init__(self, spec, geometry, seed, device, amp, eot_cut):
        self.device, self.amp = device, amp
        clip, size = build_clip(geometry, seed, device)
        self.clip = clip
        groups = expert_groups(spec["experts"])
        names = class_names(spec["classes"])
        embed = GEOMETRIES[geometry][0]
        self.prompts = PromptLearner(clip, [g[0] for g in groups], names, embed, device, eot_cut)
        self.text_encoder = TextEncoder(clip)
        self.router = nn.Linear(embed, spec["experts"]).to(device)
        self.protos = group_prototypes(clip, groups, names, device)
        self.top_k = min(TOP_K, spec["experts"])
        ln_params = []
        if spec["ln_tuning"]:
            for name, p in clip.named_parameters():
                if name.startswith("visual.transformer.resblocks.") and (".ln_1." in name or ".ln_2." in name):
                    p.requires_grad_(True)
                    ln_params.append(p)
        prompt_params = list(self.prompts.parameters()) + list(self.router.parameters())
        self.params = prompt_params + ln_params
        groups_ = [{"params": prompt_params, "lr": LR}]
        if ln_params:
            groups_.append({"params": ln_params, "lr": LR * LN_LR_SCALE})
        self.optim = torch.optim.SGD(groups_, lr=LR, momentum=MOMENTUM, dampening=0.0,
                                     weight_decay=WEIGHT_DECAY)
        self.step_inputs(spec, size, seed)

    def step_inputs(self, spec, size, seed):
        """The scaler and this step's synthetic images and labels."""
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == "fp16" else None
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.randn(spec["batch"], 3, size, size, generator=gen).to(self.device)
        self.labels = (torch.arange(spec["batch"]) % spec["classes"]).to(self.device)
        self.scale = self.clip.logit_scale.exp().item()

    def official_sgd(self, lr, spec, size, seed):
        """An official trainer's SGD over `self.params` at `lr` (no clipping), and the inputs."""
        self.optim = torch.optim.SGD(self.params, lr=lr, momentum=MOMENTUM, dampening=0.0,
                                     weight_decay=WEIGHT_DECAY)
        self.step_inputs(spec, size, seed)

    def autocast(self):
        if self.amp == "off":
            return torch.autocast("cpu", enabled=False)
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def image_features(self):
        return F.normalize(self.clip.encode_image(self.images).float(), dim=-1)

    def text_features(self):
        return self.prompts(self.text_encoder).float()

    def loss(self):
        with self.autocast():
            f = self.image_features()
            z = self.text_features()
            r = self.router(f).float()
            gates = top_k_gates(r, self.top_k)
            logits = mixture_logits(f, z, gates, self.scale)
            ce = F.cross_entropy(logits, self.labels)
            sims = torch.einsum("gcd,ged->gce", z, self.protos) / TAU
            c = sims.shape[1]
            target = torch.arange(c, device=self.device).repeat(sims.shape[0])
            text = F.cross_entropy(sims.reshape(-1, c), target)
            with torch.no_grad():
                a = torch.einsum("nd,end->ne", f, self.protos[:, self.labels])
                q = torch.zeros_like(a).scatter(1, a.topk(self.top_k, dim=1).indices, 1.0 / self.top_k)
            gate = -(q * r.log_softmax(dim=1)).sum(dim=1).mean()
        return ce + LAMBDA_TEXT * text + LAMBDA_GATE * gate

    def backward(self, loss, retain_graph=False):
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        loss.backward(retain_graph=retain_graph)

    def step(self):
        self.optim.zero_grad(set_to_none=True)
        loss = self.loss()
        self.backward(loss)
        if not torch.isfinite(loss):
            sys.exit("the loss is not finite")
        if self.scaler is not None:
            self.scaler.unscale_(self.optim)
        torch.nn.utils.clip_grad_norm_(self.params, CLIP_NORM)
        if self.scaler is not None:
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            self.optim.step()


class OnePromptStep(MoCoOpStep):
    """A CoCoOp, KgCoOp or ProGrad step as its official trainer runs it (see the module's
    documentation); the autocast, scaler and inputs are MoCoOp's step's."""

    def __init__(self, method, spec, geometry, seed, device, amp, eot_cut):
        self.device, self.amp, self.method = device, amp, method
        clip, size = build_clip(geometry, seed, device)
        self.clip = clip
        names = class_names(spec["classes"])
        embed = GEOMETRIES[geometry][0]
        self.prompts = PromptLearner(clip, [HAND_MADE], names, None, device, eot_cut)
        self.text_encoder = TextEncoder(clip)
        self.params = list(self.prompts.parameters())
        if method == "cocoop":
            width = clip.token_embedding.weight.shape[1]
            self.meta_net = nn.Sequential(nn.Linear(embed, embed // 16), nn.ReLU(),
                                          nn.Linear(embed // 16, width)).to(device)
            self.params += list(self.meta_net.parameters())
        else:
            self.hand_made = group_prototypes(clip, [[HAND_MADE]], names, device)[0]  # [C, D]
        self.official_sgd(OFFICIAL_LR, spec, size, seed)

    def text_features(self):
        return self.prompts(self.text_encoder).float()

    def cocoop_logits(self, f):
        """Each image's context shifted by the meta-net, its C prompts encoded on their own."""
        shifted = self.prompts.ctx[0].unsqueeze(0) + self.meta_net(f.to(self.prompts.ctx[0].dtype)).unsqueeze(1)
        rows = [self.scale * f[i] @ self.prompts(self.text_encoder, shifted[i]).float()[0].T
                for i in range(f.shape[0])]
        return torch.stack(rows)

    def losses(self):
        """The loss that steps the prompt, and ProGrad's distillation (None for the others)."""
        with self.autocast():
            f = self.image_features()
            if self.method == "cocoop":
                return F.cross_entropy(self.cocoop_logits(f), self.labels), None
            z = self.text_features()[0]
            logits = self.scale * f @ z.T
            ce = F.cross_entropy(logits, self.labels)
            if self.method == "kgcoop":
                kg = 1.0 - F.cosine_similarity(z, self.hand_made, dim=1).mean()
                return ce + LAMBDA_KG * kg, None
            teacher = F.softmax((self.scale * f @ self.hand_made.T).detach(), dim=-1)
            return ce, -(teacher * F.log_softmax(logits, dim=-1)).sum(1).mean()

    def loss(self):
        return self.losses()[0]

    def step(self):
        self.optim.zero_grad(set_to_none=True)
        loss, kl = self.losses()
        if not torch.isfinite(loss):
            sys.exit("the loss is not finite")
        if kl is not None:
            self.backward(kl, retain_graph=True)
            kl_grads = [p.grad.clone() for p in self.params]
            self.optim.zero_grad(set_to_none=True)
        self.backward(loss)
        if kl is not None:
            for p, b in zip(self.params, kl_grads):
                b_unit = b / torch.linalg.norm(b)
                dot = torch.dot(p.grad.flatten(), b_unit.flatten())
                if dot < 0:
                    p.grad = p.grad - dot * b_unit
        if self.scaler is not None:
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            self.optim.step()


class MapleStep(OnePromptStep):
    """A MaPLe step as its official trainer runs it (see the module's documentation): CE alone,
    stepped as the one-prompt methods are."""

    def __init__(self, spec, geometry, seed, device, amp):
        self.device, self.amp = device, amp
        clip, size = build_clip(geometry, seed, device)
        self.clip = clip
        tok = open_clip.tokenizer._tokenizer
        sot, eot = tok.encoder["<start_of_text>"], tok.encoder["<end_of_text>"]
        ids = [[sot] + tok.encode(HAND_MADE.replace("{}", name)) + [eot]
               for name in class_names(spec["classes"])]
        self.token_ids = torch.tensor([i + [0] * (CONTEXT - len(i)) for i in ids], device=device)
        with torch.no_grad():
            self.embedded = clip.token_embedding(self.token_ids)
        width = self.embedded.shape[2]
        vision_width = clip.visual.conv1.out_channels
        layers = min(len(clip.transformer.resblocks), len(clip.visual.transformer.resblocks))
        self.depth = min(MAPLE_DEPTH, layers)
        self.ctx = nn.Parameter(self.embedded[0, 1:1 + MAPLE_CTX].clone())
        self.deeper = nn.ParameterList([nn.Parameter(torch.randn(MAPLE_CTX, width, device=device) * 0.02)
                                        for _ in range(self.depth - 1)])
        self.couplings = nn.ModuleList([nn.Linear(width, vision_width).to(device)
                                        for _ in range(self.depth)])
        self.params = [self.ctx, *self.deeper, *self.couplings.parameters()]
        self.official_sgd(MAPLE_LR, spec, size, seed)

    def text_features(self):
        c, n = self.clip, MAPLE_CTX
        rows = self.embedded.shape[0]
        x = torch.cat([self.embedded[:, :1], self.ctx.expand(rows, -1, -1), self.embedded[:, 1 + n:]], 1)
        x = x + c.positional_embedding
        for i, block in enumerate(c.transformer.resblocks):
            if 1 <= i < self.depth:
                x = torch.cat([x[:, :1], self.deeper[i - 1].expand(rows, -1, -1), x[:, 1 + n:]], 1)
            x = block(x, attn_mask=c.attn_mask)
        x = c.ln_final(x)
        z = x[torch.arange(rows), self.token_ids.argmax(dim=-1)] @ c.text_projection
        return F.normalize(z.float(), dim=-1)

    def image_features(self):
        v, n = self.clip.visual, MAPLE_CTX
        visual = [self.couplings[0](self.ctx)]
        visual += [proj(t) for proj, t in zip(self.couplings[1:], self.deeper)]
        x = v.conv1(self.images.to(v.conv1.weight.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        b = x.shape[0]
        x = torch.cat([v.class_embedding.expand(b, 1, -1).to(x.dtype), x], 1) + v.positional_embedding
        x = v.ln_pre(torch.cat([x, visual[0].expand(b, -1, -1)], 1))
        for i, block in enumerate(v.transformer.resblocks):
            if 1 <= i < self.depth:
                x = torch.cat([x[:, :-n], visual[i].expand(b, -1, -1)], 1)
            x = block(x)
        return F.normalize((v.ln_post(x[:, 0]) @ v.proj).float(), dim=-1)

    def losses(self):
        with self.autocast():
            logits = self.scale * self.image_features() @ self.text_features().T
            return F.cross_entropy(logits, self.labels), None


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory(device):
    """Peak RSS (ru_maxrss) and, on CUDA, peak reserved/allocated device memory, in MiB: read right
    after the timed steps, so that a breakdown run after them does not count."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    if device.type != "cuda":
        return rss, None, None
    return (rss, torch.cuda.max_memory_reserved(device) / 2**20,
            torch.cuda.max_memory_allocated(device) / 2**20)


def timed(warmup, steps, device, fn):
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) * 1e3 / steps


def measure_training(spec, args, device, amp):
    if spec["case"] in ONE_PROMPT:
        s = OnePromptStep(ONE_PROMPT[spec["case"]][0], spec, args.geometry, args.seed, device, amp,
                          args.eot_cut)
    elif spec["case"] == "train-maple":
        s = MapleStep(spec, args.geometry, args.seed, device, amp)
    else:
        s = MoCoOpStep(spec, args.geometry, args.seed, device, amp, args.eot_cut)
    ms = timed(args.warmup, args.steps, device, s.step)
    mem = memory(device)
    parts = []
    if args.breakdown and spec["case"] not in ONE_PROMPT and spec["case"] != "train-maple":
        def part(name, fn):
            def run():
                s.optim.zero_grad(set_to_none=True)
                fn()
            parts.append([name, timed(1, args.steps, device, run)])

        def with_amp(fn):
            def run():
                with s.autocast():
                    return fn()
            return run

        part("image encoder forward", with_amp(s.image_features))
        if spec["ln_tuning"]:
            part("image encoder forward+backward", lambda: with_amp(s.image_features)().sum().backward())
        part("text side forward (E x C prompts)", with_amp(s.text_features))
        part("text side forward+backward", lambda: with_amp(s.text_features)().sum().backward())
        part("full forward (all losses)", lambda: s.loss().item())
        part("full forward+backward", lambda: s.backward(s.loss()))
    return ms, parts, mem


@torch.inference_mode()
def measure_inference(spec, args, device, amp):
    clip, size = build_clip(args.geometry, args.seed, device)
    gen = torch.Generator().manual_seed(args.seed)
    images = torch.randn(spec["batch"], 3, size, size, generator=gen).to(device)
    ctx = (torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
           if amp != "off" else torch.autocast("cpu", enabled=False))
    scale = clip.logit_scale.exp().item()
    if spec["case"] == "infer-cached":
        groups = expert_groups(spec["experts"])
        embed = GEOMETRIES[args.geometry][0]
        prompts = PromptLearner(clip, [g[0] for g in groups], class_names(spec["classes"]), embed, device,
                                args.eot_cut)
        with ctx:
            z = prompts(TextEncoder(clip)).float()  # cached once, as at evaluation
        router = nn.Linear(embed, spec["experts"]).to(device)
        k = min(TOP_K, spec["experts"])

        def run():
            with ctx:
                f = F.normalize(clip.encode_image(images).float(), dim=-1)
                logits = mixture_logits(f, z, top_k_gates(router(f), k), scale)
            logits.cpu()
    else:
        def run():
            with ctx:
                F.normalize(clip.encode_image(images).float(), dim=-1).cpu()
    ms = timed(args.warmup, args.steps, device, run)
    mem = memory(device)
    parts = []
    if args.breakdown and spec["case"] == "infer-cached":
        with ctx:
            f = F.normalize(clip.encode_image(images).float(), dim=-1)

        def mix():
            with ctx:
                mixture_logits(f, z, top_k_gates(router(f), k), scale).cpu()
        parts.append(["router + mixture on cached text features", timed(args.warmup, args.steps, device, mix)])
    return ms, parts, mem


def machine():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(l.split(":", 1)[1].strip() for l in fh if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kib = next(int(l.split()[1]) for l in fh if l.startswith("MemTotal:"))
        mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical cores{mem}, {sys.platform}"


def run_case(args):
    device = torch.device(args.device if args.device.startswith("cuda") else "cpu")
    amp = args.amp if device.type == "cuda" else "off"
    spec = case_spec(args.case, args.geometry, args.batch, args.classes, args.experts)
    measure = measure_training if args.case in TRAINING else measure_inference
    ms, parts, (rss, dev_mem, dev_alloc) = measure(spec, args, device, amp)
    mem_note = None
    if device.type == "cuda":
        mem_note = (f"device memory = torch.cuda.max_memory_reserved (max allocated "
                    f"{dev_alloc:.0f} MiB); AMP {amp}")
    return dict(case=args.case, geometry=args.geometry, device=args.device,
                experts=spec["experts"], classes=spec["classes"], batch=spec["batch"],
                ln_tuning=spec["ln_tuning"], warmup=args.warmup, steps=args.steps,
                images_per_s=spec["batch"] * 1e3 / ms, ms_per_step=ms,
                peak_rss_mib=rss if sys.platform.startswith("linux") else None,
                device_mem_mib=dev_mem, memory_note=mem_note, note=spec["note"], breakdown=parts)


def child_command(args, case):
    cmd = [sys.executable, __file__, "--device", args.device, "--geometry", args.geometry,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
           "--threads", str(args.threads), "--seed", str(args.seed), "--amp", args.amp, "--case", case]
    if args.classes is not None:
        cmd += ["--classes", str(args.classes)]
    if args.experts is not None:
        cmd += ["--experts", str(args.experts)]
    if args.breakdown:
        cmd.append("--breakdown")
    if args.eot_cut:
        cmd.append("--eot-cut")
    return cmd


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--geometry", choices=sorted(GEOMETRIES))
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--classes", type=int)
    ap.add_argument("--experts", type=int)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--amp", choices=["bf16", "fp16", "off"], default="bf16",
                    help="mixed precision on CUDA (ignored on the CPU)")
    ap.add_argument("--breakdown", action="store_true")
    ap.add_argument("--eot-cut", action="store_true",
                    help="cut every prompt after the longest prompt's EOT, as this project does")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json")
    ap.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.geometry = args.geometry or ("small" if args.device == "cpu" else "vit-b-16")
    torch.set_num_threads(args.threads)

    if args.case:
        print(RECORD_PREFIX + json.dumps(run_case(args)), flush=True)
        return
    records, failed = [], []
    for case in args.cases.split(","):
        print(f"reference: {case} ...", file=sys.stderr, flush=True)
        out = subprocess.run(child_command(args, case), stdout=subprocess.PIPE, text=True)
        lines = [l for l in out.stdout.splitlines() if l.startswith(RECORD_PREFIX)]
        if out.returncode != 0 or not lines:
            failed.append(case)
            continue
        records.append(json.loads(lines[-1][len(RECORD_PREFIX):]))
    report = dict(implementation="pytorch-eot-cut" if args.eot_cut else "pytorch", date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
                  machine=machine() + (f", {torch.cuda.get_device_name(0)}" if args.device.startswith("cuda") else ""),
                  threads=args.threads, torch=torch.__version__, open_clip=open_clip.__version__,
                  cases=records)
    for r in records:
        print(f"{r['case']:<15} {r['geometry']:<9} E={r['experts']:<3} C={r['classes']:<5} "
              f"{r['images_per_s']:9.2f} images/s {r['ms_per_step']:10.1f} ms/step "
              f"RSS {r['peak_rss_mib']:.0f} MiB")
        for name, ms in r["breakdown"]:
            print(f"  {name}: {ms:.1f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if failed:
        sys.exit(f"case(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
