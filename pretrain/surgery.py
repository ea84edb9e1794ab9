"""Function-preserving growth of a trained Transformer: pure model surgery, no DeepSpeed.

(Su Jianlin, "我们可以无损放大一个Transformer模型吗"; the schedule and the trainer's
hook live in ``pretrain.growth``.)

Train small, enlarge without changing what the model computes, keep training:
the enlarged model starts exactly where the small one stopped.

Depth (insert blocks anywhere):
  * T5 / mT5 (pre-norm): ``x + f(norm(x))`` is the identity when the block's output
    projections (attention ``o``, cross-attention ``o``, FFN ``wo``) are zero.
  * BERT / RoFormer / ELECTRA (post-norm): the inserted block computes
    ``LN2(h + FFN(h))`` with ``h = LN1(x + Attn(x))``. Zero the attention-output and
    FFN-output projections (weights and biases), give ``LN1`` unit affine, and move the
    affine of the LayerNorm that produced ``x`` (previous block's output LN, or the
    embedding LN) into ``LN2``, leaving unit affine there: ``x`` becomes ``norm(z)``,
    ``LN1`` and ``LN2`` renormalize an already normalized vector (only epsilon
    differs, ~1e-12) and ``LN2``'s affine restores the old output.
  Other weights of a new block are copied from the block before it ("stacking"), so
  it starts with sensible input projections and learns through its zero outputs.

Width (Net2Net: duplicate units, divide what is then summed over the copies):
  * hidden size (the residual stream): exact for integer multiples ``D = k*d``. Every
    unit is duplicated ``k`` times (``[x, x, ...]``), so LayerNorm/RMSNorm mean and
    variance are unchanged; readers of the stream split each column over the copies.
    Other sizes are rejected (a partial copy changes the normalization statistics).
    RoFormer / ELECTRA keep their embedding size; when it stops equalling the hidden
    size, an ``embeddings_project`` is created that copies the embedding ``k`` times.
  * FFN size: any ``F >= f`` (units copied cyclically; no normalization inside the FFN).
  * heads: BERT-family heads keep their size (``hidden / heads`` is fixed, so the
    softmax scale 1/sqrt(d_head) and RoFormer's rotary frequencies are unchanged):
    heads scale with the hidden size. T5 heads grow freely (``d_kv`` fixed); copies of a
    head share its relative-position bias column. Attention output projections split
    each copied head's columns.
  Splits are not plain halves: each copy gets ``W/c + e`` with noise ``e`` that sums
  to zero over the copies. The function is unchanged (the copies see the same input),
  but the copies receive different gradients, so they do not stay identical forever.
  Tied output embeddings read the duplicated stream k times: the LayerNorm in front of
  them is divided by k (T5: the final norm also absorbs the d_model**-0.5 rescaling).

``method: aki`` (bert2BERT's advanced knowledge initialization, Chen et al. 2022): the new
FFN units and attention heads of block ``l`` take their input weights from block ``l + 1``
(the last block from itself) instead of copying block ``l``'s. Copies of one unit then
compute different features from the start (faster to train, the paper's finding), at the
price of exactness: the function changes a little. The residual stream (hidden size) is
always copied, so LayerNorm statistics stay exact.

``grow(model, GrowthStep(...))`` returns a new model of the same class;
``grow_module`` also handles containers of models (ELECTRA's generator +
discriminator, grown consistently with their shared embeddings re-tied).
"""
from __future__ import annotations

import copy
import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import nn

from pipeline.typed_config import ConfigError

log = logging.getLogger("pretrain")


class GrowthError(ConfigError):
    """A growth request that cannot be done function-preservingly (one line)."""


@dataclass
class GrowthStep:
    """One enlargement; 0 / empty means "unchanged". Also one entry of ``growth:`` in a config."""
    at_step: int = 0            # schedule only: grow after this optimizer step
    layers: int = 0             # new depth (T5: encoder, and decoder unless decoder_layers is set)
    decoder_layers: int = 0     # T5 decoder depth
    hidden: int = 0             # new hidden size (integer multiple of the old one)
    ffn: int = 0                # new FFN size
    heads: int = 0              # new number of heads (BERT family: follows hidden; T5: free)
    at: list = field(default_factory=list)   # insertion points 0..L in the old stack (default: spread)
    method: Literal["fpi", "aki"] = "fpi"     # aki: new FFN units / heads from the next block (inexact)
    # schedule only: "step" grows after at_step; "slope" when the training loss flattens (pretrain.growth)
    when: Literal["step", "slope"] = "step"
    window: int = 0             # slope: steps per window of the relative-decrease test
    threshold: float = 0.0      # slope: grow when a window's loss is less than this much below the last one's
    min_step: int = 0           # slope: not before this step (0: two windows after the previous growth)
    max_step: int = 0           # slope: at the latest after this step (0: no limit)

    NOT_SIZES = ("at_step", "method", "when", "window", "threshold", "min_step", "max_step")

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in asdict(self).items() if v and k not in self.NOT_SIZES]
        return ", ".join(parts) or "no change"


# ---------------------------------------------------------------- families
T5_TYPES = ("t5", "mt5")
POSTNORM_TYPES = ("bert", "roformer", "electra")
STACK_RE = re.compile(r"^(.*?(?:encoder\.block|decoder\.block|encoder\.layer)\.)(\d+)\.(.*)$")

# Per-parameter axis kinds: "H" hidden, "A" attention inner (heads * head size), "N" head
# count, "F" FFN, "E" embedding size. A kind produces that dimension (rows of a Linear,
# columns of an Embedding, norm vectors); "~kind" consumes it (Linear columns).
T5_RULES = [
    (r"(shared|embed_tokens)\.weight$", (None, "H")),
    (r"\.(q|k|v)\.weight$", ("A", "~H")),
    (r"\.o\.weight$", ("H", "~A")),
    (r"relative_attention_bias\.weight$", (None, "N")),
    (r"layer_norm\.weight$", ("H",)),
    (r"\.(wi|wi_0|wi_1)\.weight$", ("F", "~H")),
    (r"\.wo\.weight$", ("H", "~F")),
    (r"lm_head\.weight$", (None, "~H")),
]
POSTNORM_RULES = [
    (r"embeddings\.(word|position|token_type)_embeddings\.weight$", (None, "E")),
    (r"embeddings\.LayerNorm\.(weight|bias)$", ("E",)),
    (r"embeddings_project\.weight$", ("H", "~E")),
    (r"embeddings_project\.bias$", ("H",)),
    (r"attention\.self\.(query|key|value)\.weight$", ("A", "~H")),
    (r"attention\.self\.(query|key|value)\.bias$", ("A",)),
    (r"attention\.output\.dense\.weight$", ("H", "~A")),
    (r"intermediate\.dense\.weight$", ("F", "~H")),
    (r"intermediate\.dense\.bias$", ("F",)),
    (r"layer\.\d+\.output\.dense\.weight$", ("H", "~F")),
    (r"output\.dense\.bias$", ("H",)),
    (r"output\.LayerNorm\.(weight|bias)$", ("H",)),
    (r"pooler\.dense\.weight$", ("H", "~H")),
    (r"pooler\.dense\.bias$", ("H",)),
    (r"predictions\.transform\.dense\.weight$", ("E", "~H")),
    (r"predictions\.transform\.dense\.bias$", ("E",)),
    (r"predictions\.transform\.LayerNorm\.(weight|bias)$", ("E",)),
    (r"predictions\.decoder\.weight$", (None, "~E")),
    (r"discriminator_predictions\.dense\.weight$", ("H", "~H")),
    (r"discriminator_predictions\.dense\.bias$", ("H",)),
    (r"discriminator_predictions\.dense_prediction\.weight$", (None, "~H")),
    (r"generator_predictions\.dense\.weight$", ("E", "~H")),
    (r"generator_predictions\.dense\.bias$", ("E",)),
    (r"generator_predictions\.LayerNorm\.(weight|bias)$", ("E",)),
    (r"generator_lm_head\.weight$", (None, "~E")),
]


def family(model) -> str:
    t = getattr(getattr(model, "config", None), "model_type", None)
    if t in T5_TYPES:
        return "t5"
    if t in POSTNORM_TYPES:
        return t
    raise GrowthError(f"cannot grow model type {t!r} (supported: {', '.join(T5_TYPES + POSTNORM_TYPES)})")


# ---------------------------------------------------------------- expansions
class Expansion:
    """Old size -> new size by copying units: new unit j is a copy of old unit ``index[j]``."""

    def __init__(self, index: torch.Tensor, old: int):
        self.index = index
        self.counts = torch.bincount(index, minlength=old).to(torch.float32)
        self.old, self.new = old, len(index)

    @classmethod
    def cyclic(cls, old: int, new: int) -> "Expansion":
        return cls(torch.arange(new) % old, old)

    @classmethod
    def heads(cls, old_heads: int, new_heads: int, head_size: int) -> "Expansion":
        head = torch.arange(new_heads) % old_heads
        return cls((head[:, None] * head_size + torch.arange(head_size)).reshape(-1), old_heads * head_size)

    @property
    def factor(self) -> int:
        return self.new // self.old


def widen(t: torch.Tensor, kinds, exps: dict, gen: torch.Generator, noise: float) -> torch.Tensor:
    """Apply the expansion of each axis: produce = copy units; consume = split over the copies."""
    for axis, kind in enumerate(kinds):
        if kind is None:
            continue
        e = exps.get(kind.lstrip("~"))
        if e is None:
            continue
        t = t.index_select(axis, e.index)
        if kind.startswith("~"):
            shape = [1] * t.dim()
            shape[axis] = -1
            t = t / e.counts[e.index].view(shape).to(t.dtype)
            if noise > 0 and e.new > e.old:
                eps = torch.randn(t.shape, generator=gen, dtype=torch.float32) * noise * float(t.float().std())
                # Zero-sum over each group of copies: the copies' sum is unchanged.
                group = torch.zeros(*t.shape[:axis], e.old, *t.shape[axis + 1:]).index_add_(axis, e.index, eps)
                eps = eps - (group / e.counts.view(shape)).index_select(axis, e.index)
                t = t + eps.to(t.dtype)
    return t


# ---------------------------------------------------------------- configs
def _depth_plan(old: int, new: int, at: list, where: str) -> list:
    """For each block of the new stack, (old block to copy, is_new)."""
    if new < old:
        raise GrowthError(f"{where}: cannot shrink from {old} to {new} layers")
    n = new - old
    if at:
        if len(at) != n:
            raise GrowthError(f"{where}: 'at' lists {len(at)} positions but {n} blocks are inserted")
        if any(not isinstance(p, int) or p < 0 or p > old for p in at):
            raise GrowthError(f"{where}: insertion positions must be integers in 0..{old}, got {at}")
        positions = sorted(at)
    else:   # spread evenly, each new block after an old one
        positions = [-(-(j + 1) * old // n) for j in range(n)]
    plan = []
    for i in range(old + 1):
        for p in positions:
            if p == i:
                plan.append((max(i - 1, 0), True))
        if i < old:
            plan.append((i, False))
    return plan


def new_config(model, step: GrowthStep):
    """The grown config and the width expansions, with one-line errors for what is not exact."""
    fam, cfg = family(model), model.config
    new = copy.deepcopy(cfg)
    exps = {}
    if fam == "t5":
        d, f, a, dkv = cfg.d_model, cfg.d_ff, cfg.num_heads, cfg.d_kv
        names = {"hidden": "d_model", "ffn": "d_ff", "heads": "num_heads"}
    else:
        d, f, a = cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads
        dkv = d // a
        names = {"hidden": "hidden_size", "ffn": "intermediate_size", "heads": "num_attention_heads"}
    D = step.hidden or d
    F = step.ffn or f
    if D < d or F < f:
        raise GrowthError(f"cannot shrink: hidden {d}->{D}, ffn {f}->{F}")
    if D % d:
        raise GrowthError(f"hidden size {d}->{D} is not exact: LayerNorm statistics are preserved only "
                          f"for integer multiples of {d}")
    if fam == "t5":
        A = step.heads or a
    else:
        A = D // dkv
        if step.heads and step.heads != A:
            raise GrowthError(f"heads: {fam} keeps the head size {dkv} (softmax scale, rotary frequencies), "
                              f"so hidden {D} needs {A} heads, not {step.heads}")
    if A < a:
        raise GrowthError(f"cannot shrink heads {a}->{A}")
    setattr(new, names["hidden"], D)
    setattr(new, names["ffn"], F)
    setattr(new, names["heads"], A)
    if D != d:
        exps["H"] = Expansion.cyclic(d, D)
    if F != f:
        exps["F"] = Expansion.cyclic(f, F)
    if A != a:
        exps["A"] = Expansion.heads(a, A, dkv)
        exps["N"] = Expansion.cyclic(a, A)
    if fam == "bert":
        exps["E"] = exps.get("H")                  # BERT embeddings are hidden-sized
    elif fam in ("roformer", "electra"):
        new.embedding_size = cfg.embedding_size    # kept: shared (ELECTRA) and tied to the LM head
    plans = {}
    if fam == "t5":
        L, Ld = cfg.num_layers, cfg.num_decoder_layers
        new.num_layers = step.layers or L
        new.num_decoder_layers = step.decoder_layers or (step.layers if step.layers and Ld == L else Ld)
        plans["encoder.block."] = _depth_plan(L, new.num_layers, step.at, "encoder")
        plans["decoder.block."] = _depth_plan(Ld, new.num_decoder_layers, step.at if Ld == L else [], "decoder")
    else:
        L = cfg.num_hidden_layers
        new.num_hidden_layers = step.layers or L
        plans["encoder.layer."] = _depth_plan(L, new.num_hidden_layers, step.at, "encoder")
    return new, exps, plans


# ---------------------------------------------------------------- growth
def _tied_output(model) -> bool:
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    return out is not None and inp is not None and out.weight is inp.weight


def _untie(model) -> None:
    """Give the output embedding its own parameter (as t5_pegasus.untie_lm_head does)."""
    out = model.get_output_embeddings()
    name = next(n for n, m in model.named_modules() if m is out) + ".weight"
    out.weight = nn.Parameter(out.weight.detach().clone())
    tied = getattr(model, "all_tied_weights_keys", None)
    if isinstance(tied, dict):
        tied.pop(name, None)


def _source_key(key: str, plans: dict, t5: bool) -> tuple[str, bool, str | None]:
    """Old state-dict key a new key is grown from, whether its block is new, and its stack."""
    m = STACK_RE.match(key)
    if not m:
        return key, False, None
    prefix, idx, rest = m.group(1), int(m.group(2)), m.group(3)
    stack = next((s for s in plans if prefix.endswith(s)), None)
    if stack is None:
        return key, False, None
    src, is_new = plans[stack][idx]
    if t5 and "relative_attention_bias" in rest:
        src = 0         # the stack's position bias lives in block 0, whatever is inserted before it
    return f"{prefix}{src}.{rest}", is_new, prefix


def grow(model, step: GrowthStep, seed: int = 0, noise: float = 0.1):
    """A new model of the same class, enlarged by ``step``, computing the same function."""
    fam = family(model)
    cfg, exps, plans = new_config(model, step)
    t5 = fam == "t5"
    tied = _tied_output(model)
    if not tied and hasattr(cfg, "tie_word_embeddings"):
        cfg.tie_word_embeddings = False
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        grown = type(model)(cfg)
    if not tied and _tied_output(grown):
        _untie(grown)
    grown.to(next(model.parameters()).dtype)
    rules = T5_RULES if t5 else POSTNORM_RULES
    old_sd = model.state_dict()
    new_sd = grown.state_dict()
    gen = torch.Generator().manual_seed(seed)
    out, new_blocks, created, trace = {}, {}, [], {}
    for key, target in new_sd.items():
        src, is_new, prefix = _source_key(key, plans, t5)
        if is_new:
            new_blocks.setdefault(prefix, set()).add(int(STACK_RE.match(key).group(2)))
        if src not in old_sd:
            created.append(key)
            out[key] = target
            continue
        kinds = next((k for pattern, k in rules if re.search(pattern, key)), ())
        value = widen(old_sd[src].detach().float(), kinds, exps, gen, noise)
        if step.method == "aki":
            value = _aki(value, _next_block_key(src, old_sd), old_sd, kinds, exps, gen, noise)
        value = value.to(target.dtype)
        if value.shape != target.shape:
            raise GrowthError(f"no growth rule gives {key} its new shape {tuple(target.shape)} "
                              f"(from {tuple(old_sd[src].shape)})")
        out[key] = value
        trace[key] = (src, is_new, kinds, exps)
    _init_created(out, created, exps, fam)
    for prefix, blocks in new_blocks.items():
        for i in sorted(blocks):
            (_t5_identity if t5 else _postnorm_identity)(out, prefix, i, fam)
    _compensate_output(model, out, exps, fam, tied, cfg)
    # Tied parameters take the input embedding's value.
    groups = {}
    for key, p in grown.state_dict(keep_vars=True).items():
        groups.setdefault(id(p), []).append(key)
    for keys in groups.values():
        if len(keys) > 1:
            main = next((k for k in keys if re.search(r"(shared|word_embeddings|embed_tokens)\.weight$", k)), keys[0])
            for k in keys:
                out[k] = out[main]
    grown.load_state_dict(out)
    grown.growth_trace = trace      # new key -> (old key, in a new block, axis kinds, expansions)
    grown.eval() if not model.training else grown.train()
    if getattr(model, "generation_config", None) is not None and getattr(grown, "generation_config", None) is not None:
        grown.generation_config = copy.deepcopy(model.generation_config)
    return grown


AKI_KINDS = ("F", "A")        # unit kinds whose new copies come from the next block (not the residual H)


def _next_block_key(src: str, old_sd: dict) -> str | None:
    """The same parameter one block up in its stack (None outside a stack or past its top)."""
    m = STACK_RE.match(src)
    if not m:
        return None
    key = f"{m.group(1)}{int(m.group(2)) + 1}.{m.group(3)}"
    return key if key in old_sd else None


def _aki(value: torch.Tensor, upper: str | None, old_sd: dict, kinds, exps: dict, gen, noise: float) -> torch.Tensor:
    """bert2BERT AKI: along each produced F/A axis, the new copies (positions past the old size)
    take the next block's values, widened the same way; the original units keep their own."""
    if upper is None:
        return value
    nxt = None
    for axis, kind in enumerate(kinds):
        e = exps.get(kind) if kind in AKI_KINDS else None
        if e is None or e.new == e.old:
            continue
        if nxt is None:
            nxt = widen(old_sd[upper].detach().float(), kinds, exps, gen, noise)
        new_units = torch.arange(e.new) >= e.old
        shape = [1] * value.dim()
        shape[axis] = -1
        value = torch.where(new_units.view(shape), nxt, value)
    return value


def _init_created(out: dict, created: list, exps: dict, fam: str) -> None:
    """Parameters the small model lacks: only an embeddings_project that copies the embedding."""
    for key in created:
        if key.endswith("embeddings_project.weight"):
            e = exps["H"]
            out[key] = torch.eye(e.old, dtype=out[key].dtype).index_select(0, e.index)
        elif key.endswith("embeddings_project.bias"):
            out[key] = torch.zeros_like(out[key])
        elif not key.endswith(("position_ids", "token_type_ids")):
            raise GrowthError(f"{fam}: grown model has a parameter {key} with no counterpart to grow it from")


def _t5_identity(out: dict, prefix: str, i: int, fam: str) -> None:
    for key in out:
        if key.startswith(f"{prefix}{i}.") and re.search(r"(Attention\.o|DenseReluDense\.wo)\.weight$", key):
            out[key] = torch.zeros_like(out[key])


def _postnorm_identity(out: dict, prefix: str, i: int, fam: str) -> None:
    p = f"{prefix}{i}."
    for name in ("attention.output.dense", "output.dense"):
        for part in ("weight", "bias"):
            out[p + name + "." + part] = torch.zeros_like(out[p + name + "." + part])
    if i == 0:
        prev = prefix.replace("encoder.layer.", "embeddings.LayerNorm.")
        if prefix.replace("encoder.layer.", "embeddings_project.weight") in out:
            raise GrowthError(f"{fam}: a block inserted at position 0 would follow embeddings_project, "
                              f"which is not a LayerNorm; insert at 1 or later")
    else:
        prev = f"{prefix}{i - 1}.output.LayerNorm."
    ln1, ln2 = p + "attention.output.LayerNorm.", p + "output.LayerNorm."
    for part, unit in (("weight", torch.ones_like), ("bias", torch.zeros_like)):
        out[ln2 + part] = out[prev + part].clone()
        out[prev + part] = unit(out[prev + part])
        out[ln1 + part] = unit(out[ln1 + part])


def _compensate_output(model, out: dict, exps: dict, fam: str, tied: bool, cfg) -> None:
    """Tied output embeddings read k copies of the stream; T5 may rescale by d_model**-0.5."""
    if fam == "t5":
        e = exps.get("H")
        if e is None:
            return
        scale = 1.0 / e.factor if tied else 1.0
        if getattr(model.config, "scale_decoder_outputs", False):
            scale *= e.factor ** 0.5
        key = "decoder.final_layer_norm.weight"
        if key in out and scale != 1.0:
            out[key] = out[key] * scale
        return
    e = exps.get("E")
    if e is None or not tied:
        return
    for key in list(out):
        if re.search(r"(predictions\.transform\.LayerNorm|generator_predictions\.LayerNorm)\.(weight|bias)$", key):
            out[key] = out[key] / e.factor


# ---------------------------------------------------------------- containers (ELECTRA)
def _pretrained(m) -> bool:
    from transformers import PreTrainedModel
    return isinstance(m, PreTrainedModel)


def generator_step(disc, gen, step: GrowthStep) -> GrowthStep:
    """ELECTRA: the generator grows by the same factors as the discriminator."""
    dc, gc = disc.config, gen.config
    s = GrowthStep()
    if step.hidden:
        if step.hidden % dc.hidden_size:
            raise GrowthError(f"hidden {dc.hidden_size}->{step.hidden} is not an integer multiple")
        s.hidden = gc.hidden_size * step.hidden // dc.hidden_size
    if step.ffn:
        num = gc.intermediate_size * step.ffn
        if num % dc.intermediate_size:
            raise GrowthError(f"ffn {dc.intermediate_size}->{step.ffn} gives a fractional generator FFN size")
        s.ffn = num // dc.intermediate_size
    if step.layers:
        same = gc.num_hidden_layers == dc.num_hidden_layers
        s.layers = gc.num_hidden_layers + step.layers - dc.num_hidden_layers
        s.at = list(step.at) if same else []
    return s


def grow_module(module, step: GrowthStep, seed: int = 0, noise: float = 0.1):
    """Grow a model, or every model inside a container (re-tying parameters they shared)."""
    if _pretrained(module):
        return grow(module, step, seed, noise)
    children = {n: c for n, c in module.named_children() if _pretrained(c)}
    if not children:
        raise GrowthError(f"{type(module).__name__}: no Hugging Face model inside to grow")
    if any(family(c) == "electra" for c in children.values()) and 0 in step.at:
        raise GrowthError("electra: cannot insert at position 0 (the embedding LayerNorm is shared)")
    groups: dict = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    by_class = {type(c).__name__: n for n, c in children.items()}
    steps = {n: step for n in children}
    if "ElectraForPreTraining" in by_class and "ElectraForMaskedLM" in by_class:
        d, g = by_class["ElectraForPreTraining"], by_class["ElectraForMaskedLM"]
        steps[g] = generator_step(children[d], children[g], step)
    module.growth_trace = {}
    for i, (name, child) in enumerate(children.items()):
        grown = grow(child, steps[name], seed + i, noise)
        setattr(module, name, grown)
        module.growth_trace.update({f"{name}.{k}": (f"{name}.{src}", *rest)
                                    for k, (src, *rest) in grown.growth_trace.items()})
    params = dict(module.named_parameters(remove_duplicate=False))
    for names in groups.values():
        names = [n for n in names if n in params and n.split(".", 1)[0] in children]
        for other in names[1:]:
            if params[other].shape == params[names[0]].shape:
                _set_param(module, other, params[names[0]])
    return module


def _set_param(root, dotted: str, param) -> None:
    *path, leaf = dotted.split(".")
    mod = root
    for part in path:
        mod = getattr(mod, part)
    setattr(mod, leaf, param)


# ---------------------------------------------------------------- checking
@torch.no_grad()
def outputs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
    """Logits and the sentence vector (last hidden state at the first token) in eval mode."""
    was = model.training
    model.eval()
    kw = {"input_ids": input_ids, "attention_mask": attention_mask, "output_hidden_states": True}
    if family(model) == "t5":
        kw["decoder_input_ids"] = model._shift_right(input_ids)
        o = model(**kw)
        res = {"logits": o.logits, "sentence": o.encoder_last_hidden_state[:, 0]}
    else:
        o = model(**kw)
        res = {"logits": o.logits, "sentence": o.hidden_states[-1][:, 0]}
    model.train(was)
    return res


def max_difference(small, big, input_ids, attention_mask) -> dict:
    """Max |difference| of logits and sentence vectors (the big vector is k copies of the small one)."""
    a, b = outputs(small, input_ids, attention_mask), outputs(big, input_ids, attention_mask)
    k = b["sentence"].shape[-1] // a["sentence"].shape[-1]
    return {"logits": float((a["logits"] - b["logits"]).abs().max()),
            "sentence": float((a["sentence"].repeat(1, k) - b["sentence"]).abs().max())}
