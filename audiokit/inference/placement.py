"""Where the work runs: the device, the decoding processes and the CPU compute streams, decided in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_num_workers(device: torch.device) -> int:
    """Decoding processes when the caller gives none.

    On a GPU the host only decodes, so a worker per core (one left to the main process, at most 8) keeps the device
    fed. On a CPU the model's forward competes with decoding for the same cores: on 2 cores, decoding in the main
    process with both cores for the forward ran mn10 at 13.9 files/s against 14.6 with one worker and one thread, and
    Cnn14 at 1.82 against 1.12, so small machines decode in the main process and larger ones spare two cores.
    """
    cores = usable_cores()
    if device.type == "cuda":
        return max(1, min(8, cores - 1))
    return 0 if cores <= 4 else 2


# Most CPU streams by default: each holds its share of a batch's activations, so more streams cost memory.
MAX_CPU_STREAMS = 4


def default_cpu_streams(num_workers: int) -> int:
    """Threads computing side by side on a CPU, each a share of every batch with a share of the cores.

    A small model at batch 1 hardly uses a second intra-op thread: on 2 cores mn10 ran 14.4 clips/s with two threads
    and 14.6 with one, while two single-threaded streams ran 18.7 (mn04: 22-24 -> 33-34). So the cores left over by
    the decoding workers are split into streams, at most ``MAX_CPU_STREAMS`` of them.
    """
    return max(1, min(MAX_CPU_STREAMS, usable_cores() - num_workers))


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` (CUDA when there is one), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; anything else is a ValueError."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {str(device)!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("--device mps was requested but this machine has no MPS (Apple GPU) device")
        return device
    if device.type not in ("cpu", "cuda"):
        # meta tensors hold no values; other backends are not what the runner was built for
        raise ValueError(f"device {str(device)!r} is not supported for inference: use auto, cpu, cuda[:N] or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was requested but no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: there are only {torch.cuda.device_count()} CUDA device(s)")
    return device


@dataclass(frozen=True)
class Placement:
    """``num_workers`` decoding processes; ``cpu_streams`` threads computing batches side by side (1 on a GPU, whose
    own queue overlaps batches), each with ``threads_per_stream`` intra-op threads."""

    device: torch.device
    num_workers: int
    cpu_streams: int
    threads_per_stream: int


def plan_placement(
    device: str | torch.device | None, num_workers: int | None = None, cpu_streams: int | None = None
) -> Placement:
    """The caller's choices where given, the defaults above otherwise; a negative count is a ValueError."""
    resolved = resolve_device(device)
    if num_workers is not None and num_workers < 0:
        raise ValueError(f"num_workers must be 0 or more, got {num_workers}")
    workers = default_num_workers(resolved) if num_workers is None else num_workers
    if cpu_streams is not None and cpu_streams < 1:
        raise ValueError(f"cpu_streams must be 1 or more, got {cpu_streams}")
    if resolved.type != "cpu":
        cpu_streams = 1
    streams = default_cpu_streams(workers) if cpu_streams is None else cpu_streams
    # Intra-op threads per stream: the cores the decoding workers leave, shared out (at least one each).
    threads = max(1, (usable_cores() - workers) // streams)
    return Placement(resolved, workers, streams, threads)
