"""``audiokit`` command line: a thin layer over the library (results to stdout, logs and progress to stderr)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._fileio import (
    STDOUT,
    OutputPathError,
    OutputWriteError,
    check_output_directory,
    check_output_path,
    to_json,
    write_output,
)

_logger = logging.getLogger("audiokit")

# 1: some input files failed (the rest has results) or training diverged; 2: nothing was done (a usage, model or
# destination problem); 3: the work was done but its results could not be written.
EXIT_OK, EXIT_FILE_ERRORS, EXIT_USAGE, EXIT_OUTPUT = 0, 1, 2, 3


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


# -- export ------------------------------------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    if args.output == STDOUT:
        raise CliError("--output must be a file: an exported model is binary")
    inputs = [args.checkpoint] if args.checkpoint else []
    check_output_path(args.output, inputs, what="--output")
    from ._builder import create_model

    # Built first, outside the write's error handling: a missing or unreadable model is a usage error (exit 2), not a
    # failure to write the result (exit 3).
    model = create_model(args.model, pretrained=args.checkpoint is None, checkpoint_path=args.checkpoint)
    try:
        path = export(model, args.output, args.format, batch_size=args.batch_size, max_seconds=args.max_seconds)
    except OSError as err:
        raise OutputWriteError(f"could not write {args.output}: {err.strerror or err}") from None
    print(path)
    return EXIT_OK


# -- models ------------------------------------------------------------------------------------------------------------
def cmd_models(args: argparse.Namespace) -> int:
    from . import _hub
    from ._registry import get_pretrained_cfg, list_models

    names = list_models(args.pattern or "", pretrained=args.pretrained)
    if not names:
        raise CliError(f"no model matches {args.pattern!r}")
    rows = []
    for name in names:
        cfg = get_pretrained_cfg(name)
        rows.append(
            {
                "name": name,
                "params": cfg.num_params,
                "sample_rate": cfg.sample_rate,
                "num_classes": cfg.num_classes,
                "labels": cfg.label_set or ("custom" if cfg.label_names else None),
                "task": cfg.task,
                "metrics": cfg.metrics,
                "weights": "download" if cfg.url else "checkpoint_path only",
                "hf_hub_id": cfg.hf_hub_id,
                "cached": bool(cfg.url) and _hub.is_cached(cfg.url, cfg.filename),
                "license": cfg.license,
                "checksum": cfg.checksum_kind,
                "sha256": cfg.sha256,
                "md5": cfg.md5,
                "pinned_sha256": _hub.read_pinned_digest(_hub.cached_file_path(cfg.url, cfg.filename))
                if cfg.checksum_kind == "pinned"
                else None,
            }
        )
    if args.format == "json":
        print(to_json(rows, indent=2))
        return EXIT_OK
    if args.hashes:
        kinds = {
            "sha256": "sha256 (published)",
            "md5": "md5 (published)",
            "pinned": "none published: pinned on first download",
            None: "-",
        }
        table = [
            [r["name"], kinds[r["checksum"]], r["sha256"] or r["md5"] or r["pinned_sha256"] or "-"]
            for r in rows
        ]
        print(_format_table(["name", "checksum", "digest"], table))
        return EXIT_OK
    header = ["name", "params", "rate", "classes", "task", "published", "weights", "cached"]
    table = [
        [
            r["name"],
            f"{r['params'] / 1e6:.2f}M" if r["params"] else "-",
            str(r["sample_rate"]),
            f"{r['num_classes']} ({r['labels']})" if r["labels"] else str(r["num_classes"]),
            r["task"],
            ", ".join(f"{k}={v:g}" for k, v in r["metrics"].items()) or "-",
            r["weights"],
            "yes" if r["cached"] else "no",
        ]
        for r in rows
    ]
    print(_format_table(header, table))
    return EXIT_OK


def _format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- tag ---------------------------------------------------------------------------------------------------------------
def _runner_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "device": args.device,
        "precision": args.precision,
        "compile": args.compile,
        "preprocess_on": args.preprocess_on,
        "cpu_streams": args.cpu_streams,
        "progress": not args.quiet and sys.stderr.isatty(),
    }


def _render_tags(records: list[dict[str, Any]], fmt: str) -> str:
    # allow_nan=False: NaN and Infinity are not JSON (RFC 8259); non-finite scores are already per-file errors.
    if fmt == "json":
        return json.dumps(records, indent=2, allow_nan=False) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "scope", "start", "end", "rank", "label", "score", "error"])
        for r in records:
            if r["error"]:
                writer.writerow([r["path"], "file", "", "", "", "", "", r["error"]])
                continue
            for rank, item in enumerate(r["labels"], 1):
                writer.writerow(
                    [r["path"], "clip", 0.0, f"{r['duration']:.6g}", rank, item["label"], f"{item['score']:.6f}", ""]
                )
            for window in r["windows"]:
                for rank, item in enumerate(window["labels"], 1):
                    writer.writerow(
                        [
                            r["path"],
                            "window",
                            window["start"],
                            window["end"],
                            rank,
                            item["label"],
                            f"{item['score']:.6f}",
                            "",
                        ]
                    )
        return buffer.getvalue()
    lines = []
    for r in records:
        if r["error"]:
            lines.append(f"{r['path']}\n  ERROR {r['error']}")
            continue
        lines.append(f"{r['path']}  ({r['duration']:.2f} s)")
        lines.extend(f"  {item['score']:.3f}  {item['label']}" for item in r["labels"])
        for window in r["windows"]:
            tags = ", ".join(f"{i['label']} {i['score']:.2f}" for i in window["labels"])
            lines.append(f"    [{window['start']:8.2f} - {window['end']:8.2f}] {tags}")
        lines.extend(f"  warning: {w}" for w in r["warnings"])
    return "\n".join(lines) + "\n"


def _emit(text: str | bytes, output: str | None) -> None:
    write_output(STDOUT if output is None else output, text)
    if output not in (None, STDOUT):
        _logger.info("wrote %s", output)


def _inputs_and_destination(args: argparse.Namespace) -> list[Path]:
    """The input files, once the output has been found usable: a bad destination must fail before hours of work."""
    from .inference import expand_inputs

    paths = expand_inputs(args.inputs, recursive=args.recursive)
    if not paths:
        raise CliError("no input files")
    if args.output is not None:
        # Everything the run reads is an input: results written over the weights would be as lost as over the audio.
        read = [*paths, *([args.checkpoint] if args.checkpoint else [])]
        if args.model.startswith("local-dir:"):
            read += list(Path(args.model[len("local-dir:") :]).expanduser().glob("*"))
        check_output_path(args.output, read, what="--output")
    return paths


def cmd_tag(args: argparse.Namespace) -> int:
    from .inference import load_model, tag

    if args.stream:
        _check_stream_args(args)
    paths = _inputs_and_destination(args)
    model = load_model(args.model, args.checkpoint)
    if model.num_classes == 0:
        raise CliError(f"{args.model} has no classifier; use `audiokit embed`")
    if args.stream:
        return _tag_stream(paths, model, args)
    records = tag(paths, model, top_k=args.top_k, threshold=args.threshold, window=args.window, hop=args.hop,
                  aggregate=args.aggregate, **_runner_kwargs(args))  # fmt: skip
    _emit(_render_tags(records, args.format), args.output)
    return _report_failures([r["error"] for r in records if r["error"]], len(records))


def _check_stream_args(args: argparse.Namespace) -> None:
    if args.format == "json":
        raise CliError("--stream prints each chunk as it is computed: use --format table, jsonl or csv (not json)")
    if args.output not in (None, STDOUT):
        raise CliError("--stream prints each chunk as it is computed, to stdout: redirect it instead of --output")
    if args.hop is not None:
        raise CliError("--stream takes consecutive chunks of --window seconds: --hop does not apply")


def _tag_stream(paths: list[Path], model: Any, args: argparse.Namespace) -> int:
    """``--stream``: each file is a new stream (``model.stream()``) fed chunk by chunk; a line (or row) per chunk with
    its start and end time and top-k labels, written and flushed as soon as the chunk is done."""
    from .audio.io import AudioLoadError, load_audio
    from .inference import top_k

    if not callable(getattr(model, "stream", None)):
        raise CliError(f"--stream needs a streaming model (SAT); {args.model} has no stream()")
    seconds = args.window if args.window is not None else model.chunk_seconds
    size = max(1, round(seconds * model.sample_rate))
    writer = csv.writer(sys.stdout, lineterminator="\n") if args.format == "csv" else None
    if writer is not None:
        writer.writerow(["path", "scope", "start", "end", "rank", "label", "score", "error"])
    errors = []
    for path in paths:
        try:
            wave = load_audio(path, sample_rate=model.sample_rate)
        except AudioLoadError as err:
            errors.append(str(err))
            if writer is not None:
                writer.writerow([path, "file", "", "", "", "", "", str(err)])
            elif args.format == "jsonl":
                print(json.dumps({"path": str(path), "error": str(err)}), flush=True)
            else:
                print(f"{path}\n  ERROR {err}", flush=True)
            continue
        stream = model.stream()
        if args.format == "table":
            print(f"{path}  ({wave.shape[-1] / model.sample_rate:.2f} s, {seconds:g} s chunks)", flush=True)
        for start in range(0, wave.shape[-1], size):
            probs = stream.push(wave[start : start + size])
            labels = top_k(probs, model.label_names, args.top_k, args.threshold)
            begin, end = start / model.sample_rate, min(wave.shape[-1], start + size) / model.sample_rate
            if writer is not None:
                for rank, (label, score) in enumerate(labels, 1):
                    writer.writerow([path, "chunk", f"{begin:.6g}", f"{end:.6g}", rank, label, f"{score:.6f}", ""])
            elif args.format == "jsonl":
                record = {"path": str(path), "start": round(begin, 6), "end": round(end, 6),
                          "labels": [{"label": n, "score": v} for n, v in labels]}  # fmt: skip
                sys.stdout.write(json.dumps(record, allow_nan=False) + "\n")
            else:
                tags = ", ".join(f"{n} {v:.2f}" for n, v in labels)
                sys.stdout.write(f"    [{begin:8.2f} - {end:8.2f}] {tags}\n")
            sys.stdout.flush()
    return _report_failures(errors, len(paths))


def _report_failures(errors: list[str], total: int) -> int:
    """Print each failure (messages name the file) and the count to stderr; exit status 1 if any."""
    for message in errors:
        print(f"audiokit: error: {message}", file=sys.stderr)
    if errors:
        print(f"audiokit: {len(errors)} of {total} file(s) failed", file=sys.stderr)
        return EXIT_FILE_ERRORS
    return EXIT_OK


# -- embed -------------------------------------------------------------------------------------------------------------
def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from .inference import embed, load_model

    if args.output == STDOUT and sys.stdout.isatty():
        raise CliError("--output -: refusing to write a binary .npz to a terminal; redirect it or give a file name")
    paths = _inputs_and_destination(args)
    model = load_model(args.model, args.checkpoint)
    result = embed(paths, model, window=args.window, hop=args.hop, layer=args.layer, frame_level=args.frame_level,
                   **_runner_kwargs(args))  # fmt: skip
    suffix = Path(args.output).suffix.lower()
    buffer = io.BytesIO()
    if suffix == ".npy":
        np.save(buffer, result.vectors)
    else:
        np.savez(buffer, ids=np.asarray(result.ids, dtype=str), embeddings=result.vectors, starts=result.starts,
                 ends=result.ends, model=np.asarray(model.pretrained_cfg.name))  # fmt: skip
    write_output(args.output, buffer.getvalue())
    print(
        f"{args.output}: {result.vectors.shape[0]} embeddings of dimension {result.vectors.shape[1]}", file=sys.stderr
    )
    return _report_failures(list(result.errors.values()), len(paths))


# -- finetune ----------------------------------------------------------------------------------------------------------
def cmd_finetune(args: argparse.Namespace) -> int:
    from .train.config import RunConfig
    from .train.loop import finetune, new_run_dir

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise CliError(f"--resume {run_dir}: not a run directory (no config.yaml)")
        cfg = RunConfig.from_yaml(run_dir / "config.yaml", args.set)
    else:
        if not args.config:
            raise CliError("give a config file (or --resume RUN_DIR)")
        cfg = RunConfig.from_yaml(args.config, args.set)
        run_dir = new_run_dir(cfg, args.config)
    cfg.validate()
    if args.fold is not None and args.fold not in (1, 2, 3, 4, 5):
        raise CliError(f"--fold must be 1-5, got {args.fold}")
    folds = [args.fold] if args.fold is not None else None
    summary = finetune(cfg, run_dir, folds=folds, resume=bool(args.resume), progress=not args.quiet)
    if summary:
        print(to_json({"run_dir": str(run_dir), **{k: summary[k] for k in ("metric", "final", "best_epoch")}}))
    return EXIT_FILE_ERRORS if summary.get("skipped_clips") else EXIT_OK


# -- evaluate ----------------------------------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_model
    from .inference import load_model
    from .train.config import RunConfig

    cfg = RunConfig.from_yaml(args.data, args.set)
    check_output_directory(args.report, what="--report")
    model = load_model(args.model, args.checkpoint)
    result = evaluate_model(model, cfg.data, args.report, fold=args.fold, batch_size=args.batch_size,
                            device=args.device, seed=cfg.train.seed)  # fmt: skip
    scalars = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    print(to_json({"report": args.report, **scalars}))
    return _report_failures(list(result["skipped_clips"].values()), result["n_samples"] + len(result["skipped_clips"]))


# -- compare-activations ----------------------------------------------------------------------------------------------
def _parse_seeds(text: str) -> list[int]:
    """``"3"`` means seeds 0, 1, 2; ``"1,5,9"`` (or ``"5,"``) lists them."""
    try:
        if "," not in text:
            count = int(text)
            if count < 1:
                raise ValueError
            return list(range(count))
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count (3) or a list (0,1,2), got {text!r}") from None


def cmd_compare_activations(args: argparse.Namespace) -> int:
    from .study import compare_activations

    activations = [a.strip() for a in args.activations.split(",") if a.strip()]
    if len(activations) < 2:
        raise CliError("--activations needs at least two names, e.g. relu,gelu")
    table = compare_activations(args.config, activations, args.seeds, args.output, overrides=args.set,
                                progress=not args.quiet)  # fmt: skip
    print(to_json({k: table[k] for k in ("metric", "winner", "runner_up", "margin_pp") if k in table}))
    return EXIT_OK


# -- parser ------------------------------------------------------------------------------------------------------------
def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _count(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _add_inference_args(p: argparse.ArgumentParser, default_model: str) -> None:
    p.add_argument("inputs", nargs="+", help="audio files, directories or glob patterns")
    p.add_argument(
        "--model", "-m", default=default_model, help=f"registered name or local-dir:PATH (default {default_model})"
    )
    p.add_argument("--checkpoint", help="a local weights file (original upstream layout or .safetensors); no download")
    p.add_argument("--recursive", "-r", action="store_true", help="descend into sub-directories")
    p.add_argument("--window", type=_positive_float, help="window length in seconds (per-window results)")
    p.add_argument("--hop", type=_positive_float, help="hop between windows in seconds (default: the window)")
    p.add_argument("--batch-size", type=_count(1), default=16)
    p.add_argument(
        "--num-workers",
        type=_count(0),
        help="decoding worker processes (default: on a GPU one per core, at most 8; on a CPU 0 up to 4 cores, else 2)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--cpu-streams",
        type=_count(1),
        help="on a CPU, threads that compute side by side, each a share of every batch with a share of the cores "
        "(default: one per core the decoding workers leave, at most 4)",
    )
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="autocast on CUDA")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (pays off on GPUs for long runs; falls back to eager if compilation fails)",
    )
    p.add_argument(
        "--preprocess-on",
        default="host",
        choices=["host", "device"],
        help="where int-to-float, downmix and resampling run: host (soxr, as the upstream scripts) or the model's "
        "device (cheaper for the host at GPU speeds; downsampling then uses torchaudio's filter)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from .inference import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="audiokit", description=__doc__)
    parser.add_argument("--verbose", "-v", action="count", default=0, help="more log output on stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list registered models")
    p.add_argument("pattern", nargs="?", default="", help="shell-style filter, e.g. 'efficientat_*'")
    p.add_argument("--pretrained", action="store_true", help="only models with downloadable weights")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument(
        "--hashes", action="store_true", help="how each download is verified (published sha256/md5, or pinned)"
    )
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("tag", help="tag audio files with a pretrained classifier")
    _add_inference_args(p, DEFAULT_MODEL)
    p.add_argument("--top-k", type=_count(0), default=5, help="labels per file/window (0: all)")
    p.add_argument("--threshold", type=_finite_float, help="only labels scoring at least this")
    p.add_argument("--aggregate", choices=["max", "mean"], default="max", help="clip score from windows")
    p.add_argument("--format", choices=["table", "json", "jsonl", "csv"], default="table")
    p.add_argument("--output", "-o", help="write results here (atomically; '-': stdout, the default)")
    p.add_argument("--stream", action="store_true",
                   help="streaming models (SAT): feed each file chunk by chunk (--window seconds, default the model's "
                   "delay) and print each chunk's labels as it is computed")  # fmt: skip
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser("embed", help="extract embeddings to .npz (ids + float32 matrix) or .npy")
    _add_inference_args(p, DEFAULT_MODEL)
    p.add_argument("--output", "-o", required=True, help="output .npz or .npy (written atomically; '-': stdout, .npz)")
    p.add_argument("--layer", type=int, help="embedding of this hidden layer (wav2vec2: 0-12; negative counts back)")
    p.add_argument("--frame-level", action="store_true", help="one row per model frame (wav2vec2: every 20 ms)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("export", help="export a model, frontend included, to ONNX, torch.export or TorchScript")
    p.add_argument("model", help="registered name or local-dir:PATH")
    p.add_argument("--checkpoint", help="a local weights file for a registered name (default: download)")
    p.add_argument("--format", choices=("onnx", "exported-program", "torchscript"), default="onnx")
    p.add_argument("--output", "-o", required=True, help="file to write (atomically)")
    p.add_argument("--batch-size", type=_count(1), help="fix the batch dimension (needed by DyMN and AST)")
    p.add_argument("--max-seconds", type=float, default=600.0, help="longest input of a variable-length graph")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("evaluate", help="score a model on a dataset split; write metrics, per-class CSV and plots")
    p.add_argument("--model", "-m", required=True, help="registered name or local-dir:PATH")
    p.add_argument("--checkpoint", help="a local weights file for a registered name")
    p.add_argument("--data", required=True, help="a fine-tuning YAML config whose data section names the dataset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. data.root=/data")
    p.add_argument("--fold", type=int, help="ESC-50 test fold (1-5)")
    p.add_argument("--report", required=True, help="output directory")
    p.add_argument("--batch-size", type=_count(1), default=32)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare-activations", help="fine-tune once per head activation and seed; table and plots")
    p.add_argument("config", help="YAML fine-tuning config")
    p.add_argument("--activations", required=True, help="comma-separated, e.g. relu,gelu,silu,leaky_relu:0.1")
    p.add_argument("--seeds", type=_parse_seeds, default=[0], help="a count (3 = seeds 0-2) or a list (0,1,2)")
    p.add_argument("--output", "-o", required=True, help="study directory (finished cells are reused)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. data.root=/data")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_compare_activations)

    p = sub.add_parser("finetune", help="fine-tune a pretrained model (ESC-50 5-fold CV, folders, CSV manifests)")
    p.add_argument("config", nargs="?", help="YAML config (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. data.root=/data")
    p.add_argument("--fold", type=int, help="run one ESC-50 test fold (1-5) instead of all")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_finetune)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(level=level, format="audiokit: %(levelname)s: %(message)s", stream=sys.stderr)
    from ._builder import CheckpointMismatchError
    from ._hub import CheckpointLoadError, WeightsUnavailableError
    from ._registry import UnknownModelError
    from .train.config import ConfigError

    try:
        return args.func(args)
    except OutputWriteError as err:
        print(f"audiokit: error: {err}", file=sys.stderr)
        return EXIT_OUTPUT
    except (CliError, ConfigError, UnknownModelError, WeightsUnavailableError, CheckpointLoadError,
            CheckpointMismatchError, OutputPathError, FileNotFoundError, ValueError) as err:  # fmt: skip
        message = err.args[0] if isinstance(err, (UnknownModelError, KeyError)) and err.args else str(err)
        print(f"audiokit: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except FloatingPointError as err:  # training diverged (a loss of NaN): the run says where; not a usage error
        print(f"audiokit: error: {err}", file=sys.stderr)
        return EXIT_FILE_ERRORS
    except KeyboardInterrupt:
        print("audiokit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
