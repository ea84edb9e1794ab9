"""DeepSpeed ZeRO pretraining: one trainer, pluggable objectives (T5-PEGASUS, ELECTRA, MLM with mask proposal, RoFormer-Sim)."""
import os
import sys

# DeepSpeed JIT-builds a CPU communication op on first use; keep the build inside this
# environment (prebuilt by `make setup`) rather than in ~/.cache, which proved unreliable
# under SLURM and costs ~90 s on every fresh machine.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))
