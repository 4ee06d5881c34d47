"""FedAvg on PneumoniaMNIST (the quickstart) with one upload compressor.

  python launch/main.py --config=configs/comm.py:topk_ef --workdir=runs/comm_topk_ef
  python launch/sweep.py --study=configs/studies/comm_presets.py:cpu  # every preset

Presets: ``none``; ``q8`` ``q4`` ``q2`` ``q1`` (stochastic quantization to b
bits, one scale per block of 256 values); ``topk`` / ``topk_ef`` (1% largest
entries, without / with error feedback); ``randk`` / ``randk_ef`` (1% random
entries). ``summary.json`` has ``total_bytes_up`` and ``bytes_up_to_target``
(test accuracy >= ``comm.target_accuracy``).
"""

from fedjax_med.configs import base, quickstart

PRESETS = {
    "none": {},
    "q8": {"comm.compressor": "quantize", "comm.bits": 8, "comm.block": 256},
    "q4": {"comm.compressor": "quantize", "comm.bits": 4, "comm.block": 256},
    "q2": {"comm.compressor": "quantize", "comm.bits": 2, "comm.block": 256},
    "q1": {"comm.compressor": "quantize", "comm.bits": 1, "comm.block": 256},
    "topk": {"comm.compressor": "topk", "comm.fraction": 0.01},
    "topk_ef": {"comm.compressor": "topk", "comm.fraction": 0.01, "comm.error_feedback": True},
    "randk": {"comm.compressor": "randk", "comm.fraction": 0.01},
    "randk_ef": {"comm.compressor": "randk", "comm.fraction": 0.01, "comm.error_feedback": True},
}


def get_config(name: str = "none"):
  if name not in PRESETS:
    raise ValueError(f"unknown comm preset {name!r}; choose one of {sorted(PRESETS)}")
  c = quickstart.get_config()
  c.comm.target_accuracy = 0.8
  return base.apply(c, PRESETS[name])
