"""Where a local model runs: CPU or CUDA, and at which precision (pure choices, no imports).

The local Whisper (CTranslate2) and the Piper voice (onnxruntime) take a `device`:
"auto" (CUDA when the process sees a CUDA device, else the CPU), "cpu" or "cuda"; the
Whisper also takes a `compute_type` (CTranslate2's names; "auto": float16 on CUDA, int8
on the CPU, what it always used there). An explicit "cuda" where no CUDA device is
visible is an error at load time, never a silent CPU fallback.

In a Ray replica, CUDA is used only when Ray gave the replica a GPU (`num_gpus` in
the deployment's config section): the pinned Ray no longer empties CUDA_VISIBLE_DEVICES
for a replica without GPUs (ray/_private/accelerators/accelerator.py,
RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO), so such a replica sees every GPU of
its node and would otherwise load onto one that Ray lends to other replicas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

Device = Literal["auto", "cpu", "cuda"]
ComputeType = Literal["auto", "default", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16",
                      "float16", "bfloat16", "float32"]

DEVICES = ("auto", "cpu", "cuda")
CPU_COMPUTE = "int8"  # CTranslate2 runs it as int8_float32 on x86
CUDA_COMPUTE = "float16"
# CTranslate2 refuses these on a CPU ("do not support efficient float16 computation").
GPU_ONLY_COMPUTE = frozenset({"float16", "bfloat16", "int8_float16", "int8_bfloat16"})


class DeviceUnavailable(RuntimeError):
    """A model was asked to load on CUDA where no CUDA device can be used."""


def pick_device(requested: str, compute_type: str = "auto", cuda_devices: int = 0, *,
                probe: str = "ctranslate2.get_cuda_device_count() found none") -> tuple[str, str]:
    """(device, compute_type) to load a model with.

    requested: "auto" | "cpu" | "cuda"; compute_type: "auto" or a CTranslate2 compute
    type; cuda_devices: how many CUDA devices the process sees (`probe`, named in errors).
    """
    if requested not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {requested!r}")
    if requested == "cuda" and cuda_devices <= 0:
        raise DeviceUnavailable(
            f"device 'cuda' was asked for, but no CUDA device is visible ({probe}): run this "
            f"deployment on a GPU node with num_gpus > 0 in its config section, install the CUDA runtime "
            f"libraries, or set the device to 'auto' (CUDA when there is one) or 'cpu'")
    device = "cuda" if requested == "cuda" or (requested == "auto" and cuda_devices > 0) else "cpu"
    if compute_type == "auto":
        return device, CUDA_COMPUTE if device == "cuda" else CPU_COMPUTE
    if device == "cpu" and requested == "auto" and compute_type in GPU_ONLY_COMPUTE:
        # A GPU config on a replica that got no GPU: the CPU's default, not a load error.
        return device, CPU_COMPUTE
    return device, compute_type


def replica_cuda(visible: int, gpu_ids: Sequence | None, probe: str) -> tuple[int, str]:
    """(the CUDA devices a model may use, the check pick_device names when there are none).

    visible: the devices the process sees (`probe` says how it looked); gpu_ids: the GPUs
    Ray gave the replica (`ray.get_gpu_ids()`), None outside Ray. A replica without a GPU
    uses none, whatever its node has."""
    if gpu_ids is not None and len(gpu_ids) == 0:
        return 0, "this replica holds no GPU: its deployment's num_gpus is 0"
    return visible, probe


def onnx_cuda_devices(available_providers: Sequence[str]) -> int:
    """onnxruntime's stand-in for a device count: 1 when its CUDA execution provider is built
    in (the onnxruntime-gpu package), else 0. Built in is not usable: the session says."""
    return 1 if "CUDAExecutionProvider" in available_providers else 0
