"""The LM head and its cross-entropy as one step, on the labelled positions only.

A T5 step at a 50k vocabulary spends about half its time in the LM head (BENCHMARKS.md): the
logits of every decoder position, pads included, then a float32 copy of them for the
cross-entropy, its log-softmax, and the same again backwards, all through memory. Here the
head runs on the positions with a label only, and the softmax's work happens in chunks of
rows while they are in cache:

* forward: per chunk, logits = h W^T (the autocast dtype); then, a few rows at a time so they
  stay in cache, one softmax (accumulated in float32) that gives both the logits' gradient
  softmax - onehot and the loss, -log p(label); where p(label) underflows, log-sum-exp - logit
  of the label, log-sum-exp = max - log p(max) (p(max) >= 1/V never underflows).
  The softmax writes straight into the gradient's rows in the compute dtype, no float32 copy
  of them, and the loss needs no max of the bf16 logits (169 us per 16 x 50k, five times the
  float32 one): fp32, the head's forward + backward 364 -> 350 ms at 700 x 256 x 50k (stop 46);
  bf16, 328 -> 315 ms at 1,344 x 256 x 50k (stop 48). In bf16, p(label) is rounded to 8 bits, so
  a row's loss is off by at most 2**-9 of p (~0.002 nats; the mean moved 1.1e-5 there); the
  gradient is the same bf16 values as before.
  One exponential per logit instead of log-softmax's and exp's two, and no float32 copy of
  the logits: the head's forward + backward 1.14x faster at 700 labels x 256 x 50k
  (BENCHMARKS.md, stop 45);
* then the two gradient matmuls at full size (chunked ones run slower on CPU), so the
  backward only scales the stored gradients by the incoming one and needs neither the
  logits nor W again (under ZeRO-3, W is gathered only for the head's forward).

Same loss as ``CrossEntropyLoss(ignore_index=-100)`` (mean over labelled positions); the
gradients are closer to float64 than autocast's own path (tests/test_lm_loss.py). On the CPU
the labelled rows are selected first; off it every row goes in and the unlabelled ones count
zero, since a boolean selection's size would have to be read back from the device every step.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

CHUNK = 256     # rows per logits matmul: 256 x 50k bf16 is 25 MB (128 rows ran the matmul 10 % slower)
ROWS = 16       # rows per softmax on CPU: 16 x 50k float32 is 3 MB, in cache
TINY = 1e-30    # p(label) below this takes the loss from log-sum-exp instead (-log p would lose digits)


def index_free(device: torch.device) -> bool:
    """Whether the unlabelled rows go in rather than being selected out: off the CPU."""
    return device.type != "cpu"


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    dev = t.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else t.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk):
        dtype = _compute_dtype(hidden)
        with torch.autocast(hidden.device.type, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            n = labels.numel()
            # rows labelled -100 come in only off the CPU (``linear_cross_entropy``): they add 0 to the
            # loss and to the gradients, and the mean is over the others, counted on the device
            ignored = (labels == -100) if index_free(h.device) else None
            if ignored is not None:
                labels = labels.masked_fill(ignored, 0)
            need_grad = hidden.requires_grad or weight.requires_grad
            grad_logits = torch.empty(n, w.shape[0], dtype=dtype, device=h.device) if need_grad else None
            total = torch.zeros((), dtype=torch.float32, device=h.device)
            step = ROWS if h.device.type == "cpu" else chunk     # a GPU takes the chunk in few kernels
            # the softmax goes straight to its gradient rows, in fp32 or bf16 (fp16 would lose p(max) >= 1/V)
            in_place = need_grad and dtype != torch.float16
            for s in range(0, n, chunk):
                logits = h[s:s + chunk] @ w.t()
                for r in range(s, s + len(logits), step):
                    x = logits[r - s:r - s + step]
                    y = labels[r:r + len(x)]
                    rows = torch.arange(len(y), device=y.device)
                    if in_place:
                        p = torch.ops.aten._softmax.out(x, 1, False, out=grad_logits[r:r + len(x)])
                    else:
                        p = torch.softmax(x, dim=1, dtype=torch.float32)
                    # the loss -log p(label), but where p(label) underflows (a label ~70 nats below the top
                    # logit), log-sum-exp - logit, log-sum-exp = max - log p(max) (p(max) >= 1/V never
                    # underflows); taken for every row off the CPU, where a branch would wait for the device
                    p_label = p[rows, y].float()
                    lost = p_label < TINY
                    if ignored is not None or h.device.type != "cpu" or bool(lost.any()):
                        log_sum_exp = x.amax(dim=1).float() - p.amax(dim=1).float().log()
                        row_loss = torch.where(lost, log_sum_exp - x[rows, y].float(), -p_label.log())
                        if ignored is not None:
                            row_loss = row_loss.masked_fill(ignored[r:r + len(x)], 0.0)
                        total += row_loss.sum()
                    else:
                        total -= p_label.log().sum()
                    if need_grad:
                        p[rows, y] -= 1.0
                        if ignored is not None:
                            p.masked_fill_(ignored[r:r + len(x), None], 0.0)
                        if not in_place:
                            grad_logits[r:r + len(x)] = p
            if need_grad:
                ctx.save_for_backward((grad_logits @ w).to(hidden.dtype), (grad_logits.t() @ h).to(weight.dtype))
            ctx.n = max(n, 1) if ignored is None else (n - ignored.sum()).clamp(min=1)
        return total / ctx.n

    @staticmethod
    def backward(ctx, grad):
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad / ctx.n
        return grad_hidden * scale.to(grad_hidden.dtype), grad_weight * scale.to(grad_weight.dtype), None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         chunk: int = CHUNK) -> torch.Tensor:
    """``cross_entropy(hidden @ weight.T, labels, ignore_index=-100)``, over the labelled rows only
    on the CPU. Elsewhere every row goes in (the unlabelled ones count zero): selecting rows by a
    boolean mask has a size the host must read from the device, a sync in every step."""
    h, y = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)
    if index_free(hidden.device):
        return _LinearCrossEntropy.apply(h, weight, y, chunk)
    keep = y != -100
    return _LinearCrossEntropy.apply(h[keep], weight, y[keep], chunk)


class LossHead(nn.Linear):
    """An ``nn.Linear`` LM head that, inside ``loss_on(labels)``, returns the loss instead of logits.

    The Hugging Face model calls its head as usual (so ZeRO-3 gathers the weight for it, and the
    parameter names do not change); the caller reads the loss from the output's ``logits``.
    """

    labels: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.labels is None:
            return super().forward(x)
        return linear_cross_entropy(x, self.weight, self.labels)      # install() swaps bias-free heads only

    @contextlib.contextmanager
    def loss_on(self, labels: torch.Tensor):
        self.labels = labels
        try:
            yield
        finally:
            self.labels = None


def install(head: nn.Module) -> LossHead | None:
    """Make ``head`` (an ``nn.Linear`` without bias) a ``LossHead`` in place; None where it is not one."""
    if type(head) is nn.Linear and head.bias is None:
        head.__class__ = LossHead
    return head if isinstance(head, LossHead) else None
