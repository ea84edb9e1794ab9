"""Each objective's FLOP count (what the trainer's MFU divides) against the matmul FLOPs torch counts.

A "6 x N x tokens" count is only honest if N is what multiplies activations at every token: not
embedding tables (a lookup), and a head that runs on some positions only (masked tokens, targets)
charged at those positions. Counted here against ``torch.utils.flop_counter`` on one real forward
and backward of each model (its dense matmuls; attention's score products are outside both).
"""
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import REPO
from pretrain.config import config_path, load_config


def measured(objective, model, batch) -> float:
    """Forward + backward FLOPs of the dense matmuls (``mm``, ``addmm``), as torch counts them."""
    with FlopCounterMode(display=False) as counter:
        loss, _ = objective.loss(model, batch)
        loss.backward()
    ops = counter.get_flop_counts()["Global"]
    return float(sum(n for op, n in ops.items() if op in (torch.ops.aten.mm, torch.ops.aten.addmm)))


@pytest.mark.slow     # 12 s: four models under the FLOP counter
@pytest.mark.parametrize("model_name", ["mlm-proposal", "bert-wwm", "electra", "roformer-sim"])
def test_train_flops_match_the_matmuls_torch_counts(tiny_data, model_name):
    from pretrain.data import read_shard

    cfg = load_config(config_path(model_name), [*tiny_data, "train.micro_batch_size=8"])
    objective = cfg.objective_class(cfg)
    clean = Path(next(o.split("=", 1)[1] for o in tiny_data if o.startswith("data.clean_dir=")))
    records = read_shard(clean / "train" / "shard-00000-of-00001.jsonl.gz")[:8]
    torch.manual_seed(0)
    model = objective.build_model()
    batch = objective.collate(records)
    counted, actual = objective.train_flops(model, batch), measured(objective, model, batch)
    # The model also multiplies at pad positions, which a count of useful FLOPs leaves out: between
    # the text-token share of what ran and all of it (3 % slack: MLM's masked tokens are the
    # budget's expectation). The old count (every parameter x tokens) was 1.2-1.6x what ran.
    share = objective.tokens_in(batch) / batch["input_ids"].numel()
    assert 0.97 * share * actual <= counted <= 1.03 * actual, (model_name, counted / actual, share)


def test_t5_loss_runs_its_matmuls_on_the_tokens_of_a_flattened_batch(t5_data):
    """``train.flatten_packed``, through the objective's own loss as the trainer calls it: the packed
    rows' padding leaves the linear layers (torch's matmul count falls to the text-token count, up
    to ``flat_length``'s rounding), and the loss is the padded rows' loss."""
    from pretrain.data import TrainData
    from pretrain.dropout import install
    from pretrain.models import relative_bias_by_offset

    cfg = load_config(config_path("t5-pegasus"), [*t5_data, "train.micro_batch_size=8", "arch.dropout_rate=0"])
    objective = cfg.objective_class(cfg)
    batch = next(iter(TrainData(cfg, objective, 0, 1)))[0]
    counted, actual, loss = {}, {}, {}
    for flatten in (False, True):
        torch.manual_seed(0)
        model = objective.build_model()
        relative_bias_by_offset(model)
        install(model, flatten=flatten)
        model.train()
        counted[flatten] = objective.train_flops(model, batch)
        with FlopCounterMode(display=False) as counter:
            value, _ = objective.loss(model, batch)
            value.backward()
        ops = counter.get_flop_counts()["Global"]
        actual[flatten] = float(sum(n for op, n in ops.items() if op in (torch.ops.aten.mm, torch.ops.aten.addmm)))
        loss[flatten] = value.item()
    assert actual[False] > 1.1 * counted[False], "the padded rows must pad for this test to mean anything"
    assert counted[True] <= actual[True] <= 1.07 * counted[True], (actual, counted)
    assert abs(loss[True] - loss[False]) < 1e-4, loss


def test_a_cpu_without_native_bf16_is_named_with_the_fp32_speedup():
    """bf16 matmuls on a CPU without AVX512-BF16 / AMX convert every operand (4x slower than fp32 on
    such a host): the trainer warns in one line at start; a CPU where bf16 is faster gets nothing."""
    from pretrain.train import matmul_peak_flops, slow_bf16

    line = slow_bf16(57.4e9, 231.8e9)
    assert "57 GFLOP/s" in line and "232 GFLOP/s" in line and "train.precision=fp32" in line and "4.0x" in line
    assert "\n" not in line
    assert slow_bf16(400e9, 200e9) is None and slow_bf16(200e9, 200e9) is None
    assert matmul_peak_flops("bfloat16", 256, 2) > 0 and matmul_peak_flops("float32", 256, 2) > 0


def test_a_low_peak_measured_at_start_is_measured_again_at_the_first_log_steps():
    """A CPU process that measures its matmul peak in a busy moment gets half the rate (stop 50: a
    run logged 71 % MFU); the first three log steps measure again and keep the best, then stop."""
    from pretrain.train import PeakFlops

    cfg = load_config(config_path("electra"), ["train.precision=bf16"])
    peak = PeakFlops(cfg, torch.device("cpu"))
    peak.flops = 1.0                              # as if the start-up measurement had caught a busy moment
    assert peak.refresh() > 1e9 and peak.again == 2
    peak.refresh(), peak.refresh()
    peak.flops = 2.0
    assert peak.refresh() == 2.0 and peak.again == 0
    fixed = PeakFlops(load_config(config_path("electra"), ["train.peak_tflops=100"]), torch.device("cpu"))
    assert fixed.flops == 100e12 and fixed.again == 0 and fixed.refresh() == 100e12


def test_the_mfu_bench_runs_each_small_preset_at_its_own_batch_per_step():
    """bench/mfu_bench.py's default: the preset's sequences per optimizer step, split into
    micro-batches that fit a CPU. A smaller step would charge a whole optimizer step (Adafactor,
    AdamW) to a fraction of the preset's tokens and understate MFU."""
    sys.path.insert(0, str(REPO / "bench"))          # as tests/test_init.py imports its bench
    import mfu_bench as bench
    for model in bench.MODELS:
        train = load_config(config_path(model), size="small").train
        micro, accum = bench.batch_split(model, "preset", 32)
        assert micro * accum == train.micro_batch_size * train.grad_accum and micro <= 32
    assert bench.batch_split("t5-pegasus", "preset", 32) == (32, 1)
    assert bench.batch_split("electra", "preset", 48) == (32, 4)       # the largest divisor of 128 under 48
    assert bench.batch_split("electra", "8", 32) == (8, 1)
