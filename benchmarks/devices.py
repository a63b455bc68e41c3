"""Peak dense matrix-product rates of known devices, for utilisation = achieved / peak of the device
ACTUALLY present (not one fixed card). Values are the vendors' datasheet figures for DENSE math
(without 2:4 sparsity), in TFLOP/s; the device name is matched as torch reports it
(torch.cuda.get_device_name). An unknown device gets no peak, and the reports say so (utilisation
is then given only against the matrix product measured in the same run).

Sources (NVIDIA datasheets): H100 SXM5 / H200 SXM: bf16 989.4, TF32 494.7, fp32 66.9; H100 PCIe:
756.5 / 378 / 51.2; H100 NVL and H200 NVL: 835.5 / 417.5 / 60 (NVL: per GPU); A100 (SXM and PCIe):
312 / 156 / 19.5; L40S: 362.05 / 183 / 91.6; L4: 121 / 60 / 30.3; A10 / A10G: 125 / 62.5 / 31.2;
RTX 4090: 165.2 (fp16/bf16 with fp32 accumulation) / 82.6 / 82.6. The project's own measurement
on the GPU machine (toolchain.md, device KINDS.md): an 8192^3 bf16 product ran at about 790 TFLOP/s
on an H200 and 798 on an H100 (80% of the datasheet), which is why the measured matmul is reported
beside the datasheet utilisation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Peak:
    name: str  # the table's name of the device
    tflops: float  # dense peak in the asked dtype
    dtype: str  # "bf16", "tf32" or "fp32"


# (pattern on torch's device name, table name, bf16, tf32, fp32); first match wins: specific first
_TABLE: tuple[tuple[str, str, float, float, float], ...] = (
    (r"H200.*NVL", "H200 NVL", 835.5, 417.5, 60.0),
    (r"H200", "H200 SXM", 989.4, 494.7, 66.9),
    (r"H100.*NVL", "H100 NVL", 835.5, 417.5, 60.0),
    (r"H100.*PCIe", "H100 PCIe", 756.5, 378.0, 51.2),
    (r"H100", "H100 SXM", 989.4, 494.7, 66.9),
    (r"A100", "A100", 312.0, 156.0, 19.5),
    (r"L40S", "L40S", 362.05, 183.0, 91.6),
    (r"\bL4\b", "L4", 121.0, 60.0, 30.3),
    (r"\bA10G?\b", "A10", 125.0, 62.5, 31.2),
    (r"RTX 4090", "RTX 4090", 165.2, 82.6, 82.6),
)


def lookup(device_name: str) -> tuple[str, float, float, float] | None:
    """(table name, bf16, tf32, fp32 TFLOP/s) of a device name, None when it is not in the table."""
    for pattern, name, bf16, tf32, fp32 in _TABLE:
        if re.search(pattern, device_name):
            return name, bf16, tf32, fp32
    return None


def device_peak(device: torch.device, dtype: torch.dtype | None, tf32: bool | None = None) -> Peak | None:
    """The peak of `device` for products in `dtype` (float32 uses the TF32 peak when TF32 is allowed:
    `tf32`, default torch.backends.cuda.matmul.allow_tf32); None on a CPU or an unknown GPU."""
    if device.type != "cuda":
        return None
    found = lookup(torch.cuda.get_device_name(device))
    if found is None:
        return None
    name, bf16, tf32_rate, fp32 = found
    if dtype in (torch.bfloat16, torch.float16):
        return Peak(name, bf16, "bf16")
    allow = torch.backends.cuda.matmul.allow_tf32 if tf32 is None else tf32
    return Peak(name, tf32_rate, "tf32") if allow else Peak(name, fp32, "fp32")
