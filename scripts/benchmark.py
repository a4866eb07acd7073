#!/usr/bin/env python
"""Measure audiokit's tagging throughput and memory; write JSON (and a markdown table) with the numbers.

Two measurements per model, on random weights (speed does not depend on the weights' values):

* ``end_to_end``: ``audiokit.tag`` machinery over a directory of generated 10 s files (44.1 kHz WAV/FLAC, some
  stereo): decode, resample to the model's rate, frontend, model, top-k; files/s and seconds to the first result.
  The model is prepared as ``audiokit tag`` prepares the models it builds (BatchNorm folded into the convolutions);
  on a CPU, batches run side by side in ``--cpu-streams`` threads.
* ``model_only``: that model's forward (frontend included) on a precomputed batch already on the device, one batch
  at a time in the calling thread, so the end-to-end figure can be compared with the model's own speed.
* ``peer``: the same files processed the way users of the peers do it, in the same run so the ratio is fair on a
  noisy machine. PANNs/EfficientAT models: their inference scripts' recipe, ``librosa.load(path, sr=rate)`` per file
  and one forward per file (the same weights, as built: unfolded, default memory layout). AST: transformers
  ``pipeline("audio-classification")`` with an AST saved locally (random weights); without ffmpeg on the machine the
  pipeline is given soundfile-decoded arrays with their sampling rate and resamples them itself.

With the first model, two more rows, each run in fresh processes so that their peak RSS is their own: a long file
(``--long-file-minutes``, streamed block by block) against a 10 s one, and many short files (``--many-files``, default
1,000 and 10,000 one-second WAVs named in a list file and tagged to streamed JSONL, as ``audiokit tag --files-from
LIST --format jsonl --output FILE``): files/s, and whether peak memory grows with the number of files.

Every measurement is repeated in ``--rounds`` interleaved rounds (audiokit, model-only and peer once each per round)
and the median is reported, with each round's value in the JSON: a shared machine's speed drifts by tens of percent
within minutes, which one-after-the-other runs would mistake for a difference between the pipelines.

Peak RSS comes from ``resource.getrusage`` (the process high-water mark, so later measurements include earlier ones);
peak CUDA memory from ``torch.cuda.max_memory_allocated``, reset per measurement.

    python scripts/benchmark.py --models efficientat_mn10 panns_cnn14 --files 32 --output bench.json
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import audiokit as ak
from audiokit.inference import InferenceRunner, default_num_workers, expand_inputs
from audiokit.layers import fold_batchnorm_


def make_files(directory: Path, count: int, seconds: float = 10.0, rate: int = 44100) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        channels = 2 if i % 3 == 0 else 1
        ext = ".flac" if i % 2 else ".wav"
        x = (0.1 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)
        path = directory / f"clip_{i:04d}{ext}"
        sf.write(path, x, rate, subtype="PCM_16")
        paths.append(path)
    return paths


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def own_peak_rss_mb() -> float:
    """This process image's own high-water mark: ``VmHWM`` starts afresh at exec, whereas Linux carries ru_maxrss
    over from the parent that forked us (a child of a 2 GB benchmark would report at least 2 GB)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


def bench_end_to_end(model, paths, batch_size: int, num_workers: int, device: str, precision: str,
                     **runner_options) -> dict:  # fmt: skip
    runner = InferenceRunner(model, mode="scores", batch_size=batch_size, num_workers=num_workers, device=device,
                             precision=precision, **runner_options)  # fmt: skip
    if runner.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    files = expand_inputs(paths)
    list(runner.iter_results(files[: min(2, len(files))]))  # warm-up (allocations, worker start-up code paths)
    start = time.perf_counter()
    first = None
    count = 0
    for result in runner.iter_results(files):
        if first is None:
            first = time.perf_counter() - start
        assert result.ok, result.error
        count += 1
    if runner.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    out = {
        "files": count,
        "seconds": round(elapsed, 3),
        "files_per_s": round(count / elapsed, 2),
        "seconds_to_first_result": round(first or 0.0, 3),
        "batch_size": batch_size,
        "num_workers": num_workers,
        "precision": precision,
        "channels_last": runner.channels_last,
        **runner_options,
        "cpu_streams": runner.cpu_streams,  # the resolved count, where the option may say None (the default)
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    if runner.device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def bench_model_only(model, batch_size: int, device: torch.device, seconds: float, repeats: int, dtype) -> dict:
    model = model.eval().to(device)
    # Fixed-input models take exactly their input (the ONNX rows use the same length).
    samples = model.max_samples or int(seconds * model.sample_rate)
    wave = 0.1 * torch.randn(batch_size, samples, device=device)
    if dtype is None:
        autocast = torch.autocast(device.type, enabled=False)
    else:
        autocast = torch.autocast(device.type, dtype=dtype)
    with torch.inference_mode(), autocast:
        model(wave)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(repeats):
            model(wave)
        if device.type == "cuda":
            torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    out = {
        "batch_size": batch_size,
        "clips_per_s": round(batch_size * repeats / elapsed, 2),
        "dtype": str(dtype).replace("torch.", "") if dtype else "float32",
        "backend": "eager",
    }
    if device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def onnx_sessions(model, batch_sizes: list[int], workdir: Path) -> dict[int, object]:
    """One onnxruntime session per batch size over ``audiokit.export``'s graph of ``model`` (one shared graph when the
    batch can be dynamic; DyMN and the Kaldi-fbank models are exported once per batch size)."""
    import onnxruntime

    from audiokit.export import ExportError, export

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    name = model.pretrained_cfg.name

    def session(path: Path):
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    try:
        shared = session(export(model, workdir / f"{name}.onnx"))
        return dict.fromkeys(batch_sizes, shared)
    except ExportError as err:
        if "dynamic batch" not in str(err):
            raise
    return {b: session(export(model, workdir / f"{name}-b{b}.onnx", batch_size=b)) for b in batch_sizes}


def bench_onnx_model_only(model, session, batch_size: int, repeats: int) -> dict:
    """onnxruntime on the exported graph (frontend included), fp32, on the same input length as ``model_only``."""
    samples = model.max_samples or int(10.0 * model.sample_rate)
    wave = (0.1 * torch.randn(batch_size, samples)).numpy()
    session.run(None, {"waveform": wave})  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        session.run(None, {"waveform": wave})
    elapsed = time.perf_counter() - start
    return {"batch_size": batch_size, "clips_per_s": round(batch_size * repeats / elapsed, 2),
            "dtype": "float32", "backend": "onnxruntime"}  # fmt: skip


def _timed(results_iter, count: int) -> dict:
    start = time.perf_counter()
    first = None
    for _ in results_iter:
        if first is None:
            first = time.perf_counter() - start
    elapsed = time.perf_counter() - start
    return {"files": count, "seconds": round(elapsed, 3), "files_per_s": round(count / elapsed, 2),
            "seconds_to_first_result": round(first or 0.0, 3), "peak_rss_mb": round(peak_rss_mb(), 1)}  # fmt: skip


def bench_peer_librosa(model, paths, device: torch.device) -> dict:
    """PANNs/EfficientAT inference-script recipe: ``librosa.load(sr=...)`` per file, one forward per file."""
    import librosa

    model = model.eval().to(device)

    def run():
        with torch.inference_mode():
            for path in paths:
                wave, _ = librosa.load(path, sr=model.sample_rate, mono=True)
                yield torch.sigmoid(model(torch.from_numpy(wave)[None].to(device))).cpu()

    next(run())  # warm-up on the first file
    return {"recipe": "librosa.load + forward per file", **_timed(run(), len(paths))}


def transformers_ast_pipeline(device: torch.device, workdir: Path):
    """transformers ``pipeline("audio-classification")`` over an AST saved locally (random weights)."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, pipeline

    local = workdir / "hf_ast"
    ASTForAudioClassification(ASTConfig(num_labels=527)).save_pretrained(local)
    ASTFeatureExtractor().save_pretrained(local)
    return pipeline("audio-classification", model=str(local), device=0 if device.type == "cuda" else -1)


def bench_peer_transformers_ast(classifier, paths) -> dict:
    """The pipeline's user recipe: one call per file."""

    def run():
        for path in paths:
            audio, rate = sf.read(path, dtype="float32")
            if audio.ndim > 1:
                audio = audio.mean(axis=1)
            yield classifier({"raw": audio, "sampling_rate": rate}, top_k=5)

    next(run())  # warm-up
    return {
        "recipe": "transformers pipeline('audio-classification'), arrays from soundfile",
        **_timed(run(), len(paths)),
    }


def _write_esc50_meta(path: Path, clips: int) -> None:
    """An ``esc50.csv`` for ``clips`` synthetic files: folds 1-5 in turn, classes 0..49 in blocks of five (so every
    class spreads over all folds, as in ESC-50); the audio itself is written by make_synthetic_esc50."""
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for i in range(clips):
        fold, target = i % 5 + 1, (i // 5) % 50
        rows.append(f"{fold}-{100000 + i}-A-{target}.wav,{fold},{target},class{target:02d},False,{100000 + i},A")
    path.write_text("\n".join(rows) + "\n")


def bench_finetune(model_name: str, clips: int, seconds: float, epochs: int, batch_size: int,
                   device: torch.device | str, workdir: Path, num_workers: int | None = None) -> dict:  # fmt: skip
    """Fine-tuning throughput through ``audiokit.train.finetune`` on ESC-50-shaped synthetic data, one test fold.

    The run starts from the shipped ESC-50 recipe of the model (``configs/esc50_<model>.yaml``; mn10's for models
    without one) with random weights. The decoded-audio cache is built and timed first, on its own: it is paid once
    per dataset, rate and clip length, so it must not count in samples/s; ``finetune`` then finds it in place.
    samples/s, data wait and GPU utilisation are the training epochs' own (``metrics.jsonl``): validation and
    checkpoints after each epoch are in ``wall_seconds`` only.
    """
    import os
    import shutil

    scripts = str(Path(__file__).resolve().parent)
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    from make_synthetic_esc50 import make_dataset

    from audiokit.train import RunConfig, finetune
    from audiokit.train.data import decode_clips, read_clips

    device = torch.device(device)
    root = workdir / f"esc50_{clips}x{seconds:g}s"
    if not (root / "meta" / "esc50.csv").is_file():  # one dataset for every model of the run
        workdir.mkdir(parents=True, exist_ok=True)
        meta = workdir / f"esc50_meta_{clips}.csv"
        _write_esc50_meta(meta, clips)
        make_dataset(meta, root, seconds=seconds, rate=44100)
    configs = Path(__file__).resolve().parents[1] / "configs"
    base = configs / f"esc50_{model_name.split('.')[0]}.yaml"
    base = base if base.is_file() else configs / "esc50_efficientat_mn10.yaml"
    workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
    cache_dir, run_dir = workdir / f"cache_{model_name}", workdir / f"run_{model_name}"
    cfg = RunConfig.from_yaml(base, [
        f"model.name={model_name}", "model.pretrained=false", f"data.root={root}", "data.folds=[1]",
        f"data.clip_seconds={seconds}", f"data.num_workers={workers}", f"data.cache_dir={cache_dir}",
        f"train.epochs={epochs}", f"train.batch_size={batch_size}", f"train.device={device}",
    ]).validate()  # fmt: skip

    rate = ak.create_model(model_name).sample_rate
    start = time.perf_counter()
    decode_clips(read_clips(cfg.data), rate, seconds, cache_dir, workers)
    cache_seconds = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    summary = finetune(cfg, run_dir, progress=False)
    wall = time.perf_counter() - start
    records = [json.loads(line) for line in (run_dir / "fold1" / "metrics.jsonl").read_text().splitlines()]
    split = summary["splits"]["fold1"]
    global_batch = min(batch_size, split["train_clips"])
    samples = (split["train_clips"] // global_batch) * global_batch * len(records)
    train_seconds = sum(r["train_seconds"] for r in records)
    data_wait = sum(r["data_wait_s"] for r in records)
    epoch_keys = ("epoch", "train_seconds", "samples_per_s", "data_wait_s", "data_wait_fraction",
                  "gpu_utilization_percent")  # fmt: skip
    out = {
        "config": base.name,
        "clips": clips,
        "clip_seconds": seconds,
        "train_clips": split["train_clips"],
        "val_clips": split["val_clips"],
        "epochs": len(records),
        "batch_size": batch_size,
        "num_workers": workers,
        "amp": cfg.train.amp if device.type == "cuda" else "none",
        "sample_rate": rate,
        "cache_build_seconds": round(cache_seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "samples_per_s": round(samples / max(train_seconds, 1e-9), 2),
        "data_wait_s": round(data_wait, 3),
        "data_wait_fraction": round(data_wait / max(train_seconds, 1e-9), 4),
        "wall_seconds": round(wall, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "per_epoch": [{k: r[k] for k in epoch_keys if k in r} for r in records],
    }
    utilization = [r["gpu_utilization_percent"] for r in records if "gpu_utilization_percent" in r]
    if utilization:
        out["gpu_utilization_percent"] = round(sum(utilization) / len(utilization), 1)
    if device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    shutil.rmtree(cache_dir, ignore_errors=True)  # 2,000 clips of 5 s are ~0.6 GB per model and rate
    return out


def write_long_file(path: Path, minutes: float, rate: int = 44100) -> Path:
    """A stereo 16-bit WAV of ``minutes`` of noise, written a minute at a time (never whole in memory)."""
    rng = np.random.default_rng(1)
    with sf.SoundFile(path, "w", samplerate=rate, channels=2, subtype="PCM_16") as out:
        remaining = round(minutes * 60 * rate)
        while remaining:
            n = min(remaining, 60 * rate)
            out.write((0.1 * rng.standard_normal((n, 2))).astype(np.float32))
            remaining -= n
    return path


def _long_file_child(spec: str) -> int:
    """Run in a fresh process so that its peak RSS belongs to this one file (ru_maxrss is a high-water mark)."""
    job = json.loads(spec)
    model = ak.create_model(job["model"]).eval()
    fold_batchnorm_(model)  # as audiokit tag does with the models it builds
    runner = InferenceRunner(model, mode="scores", batch_size=job["batch_size"], num_workers=0, device=job["device"])
    start = time.perf_counter()
    (result,) = runner.run([job["path"]])
    elapsed = time.perf_counter() - start
    assert result.ok, result.error
    out = {"audio_seconds": round(result.duration, 1), "windows": max(1, len(result.segments)),
           "seconds": round(elapsed, 2), "peak_rss_mb": round(own_peak_rss_mb(), 1)}  # fmt: skip
    if runner.device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(out))
    return 0


def _in_fresh_process(flag: str, job: dict, what: str) -> dict:
    """Run this script's ``flag`` child on ``job`` in a new process (its peak RSS its own); the JSON it prints."""
    import subprocess

    done = subprocess.run([sys.executable, __file__, flag, json.dumps(job)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_long_file(model_name: str, minutes: float, batch_size: int, device: str, workdir: Path) -> dict:
    """Tag a 10 s file and a ``minutes``-long one (default windows), each in its own process: wall time and peak RSS.

    The long file is streamed (decoded block by block), so its peak memory should stay close to the short file's.
    """

    rows = {}
    for label, length in (("10 s", 10 / 60), (f"{minutes:g} min", minutes)):
        path = write_long_file(workdir / f"long_{length:.4f}.wav", length)
        job = {"model": model_name, "path": str(path), "batch_size": batch_size, "device": device}
        rows[label] = _in_fresh_process("--long-file-child", job, "long-file run")
        path.unlink()
    short, long = rows.values()
    return {"model": model_name, "batch_size": batch_size, "runs": rows,
            "rss_ratio_long_vs_10s": round(long["peak_rss_mb"] / short["peak_rss_mb"], 2),
            "audio_seconds_per_s": round(long["audio_seconds"] / long["seconds"], 1)}  # fmt: skip


def write_short_files(directory: Path, count: int, seconds: float, rate: int = 16000) -> Path:
    """``count`` mono 16-bit WAVs of ``seconds`` of noise, and a list file naming them one per line (the
    ``--files-from`` input a job over an archive is given, since a shell glob breaks long before 10,000 names)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    listing = directory / "files.txt"
    with listing.open("w") as names:
        for i in range(count):
            path = directory / f"short_{i:06d}.wav"
            noise = (0.1 * rng.standard_normal(round(seconds * rate))).astype(np.float32)
            sf.write(path, noise, rate, subtype="PCM_16")
            names.write(f"{path}\n")
    return listing


def _many_files_child(spec: str) -> int:
    """Tag the first ``count`` names of a list into a JSONL file as ``audiokit tag --files-from LIST --format jsonl
    --output FILE`` does (names read as the run goes, records streamed), in a fresh process so that its peak RSS
    belongs to this job alone."""
    job = json.loads(spec)
    model = ak.create_model(job["model"]).eval()
    fold_batchnorm_(model)

    def names():
        with open(job["list"]) as listing:
            yield from (line.rstrip("\n") for line in itertools.islice(listing, job["count"]))

    start = time.perf_counter()
    run = ak.tag_to(job["output"], names(), model, batch_size=job["batch_size"], num_workers=job["num_workers"],
                    device=job["device"])  # fmt: skip
    elapsed = time.perf_counter() - start
    assert run.written == job["count"] and not run.errors, (run.written, run.errors[:3])
    # The main process's own peak: where records, queues and results accumulate if anything does. (Decoding workers
    # are not summed in: RUSAGE_CHILDREN's maximum counts any process forked from here, find_library's included, at
    # the size of this process when it forked.)
    out = {"files": run.written, "seconds": round(elapsed, 2), "files_per_s": round(run.written / elapsed, 1),
           "peak_rss_mb": round(own_peak_rss_mb(), 1)}  # fmt: skip
    if torch.cuda.is_available() and job["device"].startswith("cuda"):
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(out))
    return 0


def bench_many_files(model_name: str, counts: list[int], seconds: float, batch_size: int, num_workers: int,
                     device: str, workdir: Path) -> dict:  # fmt: skip
    """Tag ``counts`` short files (each count in its own process, streamed to JSONL): files/s and peak RSS, whose
    ratio between the largest and the smallest count shows whether memory grows with the number of files."""

    listing = write_short_files(workdir / "many", max(counts), seconds)
    rows = {}
    for count in counts:
        output = workdir / f"many_{count}.jsonl"
        job = {"model": model_name, "list": str(listing), "count": count, "output": str(output),
               "batch_size": batch_size, "num_workers": num_workers, "device": device}  # fmt: skip
        rows[str(count)] = _in_fresh_process("--many-files-child", job, f"many-files run of {count} files")
        output.unlink()
    small, large = rows[str(min(counts))], rows[str(max(counts))]
    ratio = round(large["peak_rss_mb"] / small["peak_rss_mb"], 2)
    return {"model": model_name, "clip_seconds": seconds, "batch_size": batch_size, "num_workers": num_workers,
            "runs": rows, "rss_ratio_most_vs_fewest": ratio}  # fmt: skip


def _median_run(runs: list[dict], key: str) -> dict:
    """The run with the median ``key`` (the lower middle one for an even count), with every run's value beside it."""
    ordered = sorted(runs, key=lambda run: run[key])
    return {**ordered[(len(ordered) - 1) // 2], f"{key}_runs": [run[key] for run in runs]}


def bench_model_rounds(name: str, paths: list[Path], device: torch.device, args, workdir: Path) -> dict:
    """Every measurement of one model, repeated in ``args.rounds`` interleaved rounds.

    A shared or throttled machine drifts by tens of percent within minutes, so one after the other the audiokit and
    peer figures would compare different machines. Each round measures every configuration once; the reported row is
    the median round, and the audiokit/peer ratio is the median of the ratios taken within each round.
    """
    model = ak.create_model(name).eval()
    # The peers run the model as built: fp32, default memory layout, BatchNorm unfolded (the runner converts its model
    # in place, and audiokit tag folds the BatchNorm of the models it builds, as here).
    peer_model = copy.deepcopy(model)
    fold_batchnorm_(model)
    peer_pipeline = None
    if not args.no_peers and name.startswith("ast_"):
        peer_pipeline = transformers_ast_pipeline(device, workdir)
    configs = [(batch_size, workers, streams) for batch_size in args.batch_sizes for workers in args.workers
               for streams in args.cpu_streams]  # fmt: skip
    dtypes = [None] + ([torch.bfloat16] if device.type == "cuda" else [])
    end_to_end: dict = {config: [] for config in configs}
    model_only: dict = {(batch_size, dtype): [] for batch_size in args.batch_sizes for dtype in dtypes}
    sessions = onnx_sessions(model, args.batch_sizes, workdir) if "onnxruntime" in args.backends else {}
    onnx_only: dict = {batch_size: [] for batch_size in sessions}
    peers, ratios = [], []
    for round_index in range(args.rounds):
        for batch_size, workers, streams in configs:
            row = bench_end_to_end(model, paths, batch_size, workers, str(device), args.precision,
                                   compile=args.compile, preprocess_on=args.preprocess_on,
                                   cpu_streams=streams)  # fmt: skip
            end_to_end[batch_size, workers, streams].append(row)
            print(f"[{round_index + 1}/{args.rounds}] {name} e2e bs={batch_size} workers={row['num_workers']} "
                  f"streams={row['cpu_streams']}: {row['files_per_s']} files/s", file=sys.stderr)  # fmt: skip
        for batch_size, dtype in model_only:
            # as many clips as the end-to-end run tags, unless told otherwise
            repeats = args.model_only_repeats or -(-len(paths) // batch_size)
            row = bench_model_only(model, batch_size, device, 10.0, repeats, dtype)
            model_only[batch_size, dtype].append(row)
            print(f"[{round_index + 1}/{args.rounds}] {name} model-only bs={batch_size} {row['dtype']}: "
                  f"{row['clips_per_s']} clips/s", file=sys.stderr)  # fmt: skip
        for batch_size, session in sessions.items():
            repeats = args.model_only_repeats or -(-len(paths) // batch_size)
            row = bench_onnx_model_only(model, session, batch_size, repeats)
            onnx_only[batch_size].append(row)
            print(f"[{round_index + 1}/{args.rounds}] {name} model-only bs={batch_size} onnxruntime: "
                  f"{row['clips_per_s']} clips/s", file=sys.stderr)  # fmt: skip
        if args.no_peers:
            continue
        if peer_pipeline is not None:
            peers.append(bench_peer_transformers_ast(peer_pipeline, paths))
        else:
            peers.append(bench_peer_librosa(peer_model, paths, device))
        best = max(runs[-1]["files_per_s"] for runs in end_to_end.values())
        ratios.append(best / peers[-1]["files_per_s"])
        print(f"[{round_index + 1}/{args.rounds}] {name} peer: {peers[-1]['files_per_s']} files/s; "
              f"audiokit/peer {ratios[-1]:.2f}x", file=sys.stderr)  # fmt: skip
    entry: dict = {
        "params": sum(p.numel() for p in peer_model.parameters()),  # as published: before folding
        "rounds": args.rounds,
        "end_to_end": [_median_run(runs, "files_per_s") for runs in end_to_end.values()],
        "model_only": [_median_run(runs, "clips_per_s") for runs in (*model_only.values(), *onnx_only.values())],
    }
    if peers:
        entry["peer"] = _median_run(peers, "files_per_s")
        entry["ratio_vs_peer_runs"] = [round(ratio, 2) for ratio in ratios]
        entry["ratio_vs_peer"] = round(float(np.median(ratios)), 2)
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", nargs="+", default=["efficientat_mn10", "efficientat_mn04", "panns_cnn14", "ast_base"]
    )
    parser.add_argument("--files", type=int, help="generated 10 s files (default: 8 on CPU, 512 on CUDA)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved repetitions of every measurement; the median is reported")  # fmt: skip
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="default: 1 and 8 on CPU, 16 and 64 on CUDA")
    parser.add_argument("--workers", type=int, nargs="+",
                        help="decoding processes (default: the runner's choice for the device and cores)")  # fmt: skip
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cpu-streams", type=int, nargs="+", default=[None],
                        help="CPU batches computed side by side (default: the runner's choice)")  # fmt: skip
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument(
        "--model-only-repeats", type=int, help="forward passes per model-only run (default: as many clips as files)"
    )
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--no-peers", action="store_true", help="skip the peer recipes")
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["eager"],
        choices=["eager", "onnxruntime"],
        help="model-only backends: eager torch, and onnxruntime on audiokit.export's graph (CPU)",
    )
    parser.add_argument("--output", default="benchmark.json")
    parser.add_argument("--finetune", nargs="+", default=[], metavar="MODEL",
                        help="also time one fine-tuning epoch of these models (default: none)")  # fmt: skip
    parser.add_argument("--finetune-clips", type=int, default=2000, help="ESC-50-shaped synthetic clips")
    parser.add_argument("--finetune-seconds", type=float, default=5.0, help="length of each clip")
    parser.add_argument("--finetune-batch-size", type=int, default=32)
    parser.add_argument("--finetune-workers", type=int,
                        help="loader processes (default: 4 as the shipped configs, at most the CPU count)")  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="torch.compile in the end-to-end runs")
    parser.add_argument("--preprocess-on", default="host", choices=["host", "device"],
                        help="where the end-to-end runs convert, downmix and resample")  # fmt: skip
    parser.add_argument("--long-file-minutes", type=float, default=60.0,
                        help="also tag a file this long with the first model, own process (0: skip)")  # fmt: skip
    parser.add_argument("--long-file-child", help=argparse.SUPPRESS)
    parser.add_argument("--many-files", type=int, nargs="+", default=[1000, 10000], metavar="COUNT",
                        help="also tag this many short files with the first model, each count in its own process "
                        "(0: skip)")  # fmt: skip
    parser.add_argument("--many-files-seconds", type=float, default=1.0, help="length of each short file")
    parser.add_argument("--many-files-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.long_file_child:
        return _long_file_child(args.long_file_child)
    if args.many_files_child:
        return _many_files_child(args.many_files_child)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))  # fmt: skip
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.batch_sizes is None:
        args.batch_sizes = [16, 64] if device.type == "cuda" else [1, 8]
    if "onnxruntime" in args.backends and device.type != "cpu":
        parser.error("--backends onnxruntime runs on the CPU (onnxruntime-gpu is not set up): use --device cpu")
    if args.workers is None:
        args.workers = [default_num_workers(device)]
    report = {
        "audiokit": ak.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "results": {},
    }
    files = args.files or (512 if device.type == "cuda" else 8)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_files(Path(tmp), files)
        for name in args.models:
            report["results"][name] = bench_model_rounds(name, paths, device, args, Path(tmp))
        if args.long_file_minutes > 0 and args.models:
            row = bench_long_file(args.models[0], args.long_file_minutes, max(args.batch_sizes), str(device), Path(tmp))
            report["long_file"] = row
            print(f"long file: {row}", file=sys.stderr)
        many = sorted({count for count in args.many_files if count > 0})
        if many and args.models:
            row = bench_many_files(args.models[0], many, args.many_files_seconds, max(args.batch_sizes),
                                   args.workers[0], str(device), Path(tmp))  # fmt: skip
            report["many_files"] = row
            print(f"many short files: {row}", file=sys.stderr)
        if args.finetune:
            report["finetune"] = {}
        for name in args.finetune:
            row = bench_finetune(name, args.finetune_clips, args.finetune_seconds, 1, args.finetune_batch_size, device,
                                 Path(tmp) / "finetune", args.finetune_workers)  # fmt: skip
            report["finetune"][name] = row
            print(f"{name} fine-tune: {row['samples_per_s']} samples/s, data wait {row['data_wait_s']} s "
                  f"({100 * row['data_wait_fraction']:.1f} %), cache build {row['cache_build_seconds']} s",
                  file=sys.stderr)  # fmt: skip
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"| model | batch | workers | CPU streams | files/s (median of {args.rounds}) | first result s | "
             "peak RSS MB |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, entry in report["results"].items():
        if "peer" in entry:
            peer = entry["peer"]
            lines.append(f"| {name} (peer: {peer['recipe']}) | 1 | - | - | {peer['files_per_s']} | "
                         f"{peer['seconds_to_first_result']} | {peer['peak_rss_mb']} |")  # fmt: skip
            lines.append(f"| {name}: audiokit / peer (median of the rounds' ratios) | | | | "
                         f"{entry['ratio_vs_peer']}x | | |")  # fmt: skip
    for name, entry in report["results"].items():
        for row in entry["end_to_end"]:
            lines.append(f"| {name} | {row['batch_size']} | {row['num_workers']} | {row['cpu_streams']} | "
                         f"{row['files_per_s']} | "
                         f"{row['seconds_to_first_result']} | {row['peak_rss_mb']} |")  # fmt: skip
        for row in entry["model_only"]:
            lines.append(
                f"| {name} (model only, {row.get('backend', 'eager')} {row['dtype']}) | {row['batch_size']} | - | - | "
                f"{row['clips_per_s']} | - | - |"
            )
    if report.get("long_file"):
        row = report["long_file"]
        lines += ["", f"| long file ({row['model']}, batch {row['batch_size']}) | audio s | windows | wall s | "
                  "peak RSS MB |", "|---|---|---|---|---|"]  # fmt: skip
        for label, run in row["runs"].items():
            lines.append(f"| {label} | {run['audio_seconds']} | {run['windows']} | {run['seconds']} | "
                         f"{run['peak_rss_mb']} |")  # fmt: skip
        lines.append(f"| peak RSS ratio (long / 10 s) | | | | {row['rss_ratio_long_vs_10s']} |")
    if report.get("many_files"):
        row = report["many_files"]
        lines += ["", f"| short files ({row['model']}, {row['clip_seconds']:g} s each, batch {row['batch_size']}, "
                  f"workers {row['num_workers']}) | wall s | files/s | peak RSS MB |", "|---|---|---|---|"]  # fmt: skip
        for count, run in row["runs"].items():
            lines.append(f"| {int(count):,} files | {run['seconds']} | {run['files_per_s']} | {run['peak_rss_mb']} |")
        lines.append(f"| peak RSS ratio (most / fewest files) | | | {row['rss_ratio_most_vs_fewest']} |")
    if report.get("finetune"):
        lines += ["", "| fine-tune (1 epoch) | train clips x s | batch | workers | samples/s | data wait s | "
                  "data wait % | cache build s | peak RSS MB | peak CUDA MB | GPU util % |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, row in report["finetune"].items():
            lines.append(f"| {name} | {row['train_clips']} x {row['clip_seconds']:g} | {row['batch_size']} | "
                         f"{row['num_workers']} | {row['samples_per_s']} | {row['data_wait_s']} | "
                         f"{100 * row['data_wait_fraction']:.1f} | {row['cache_build_seconds']} | "
                         f"{row['peak_rss_mb']} | {row.get('peak_cuda_mb', '-')} | "
                         f"{row.get('gpu_utilization_percent', '-')} |")  # fmt: skip
    Path(args.output).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
