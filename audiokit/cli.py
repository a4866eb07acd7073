"""``audiokit`` command line: a thin layer over the library (results to stdout, logs and progress to stderr)."""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import logging
import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
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

    if args.format == "transformers":  # a directory
        from .export_transformers import check_destination

        local = args.model[len("local-dir:") :] if args.model.startswith("local-dir:") else None
        sources = [p for p in (args.checkpoint_path, local) if p]
        check_destination(args.output, overwrite=args.overwrite, inputs=sources)
    else:
        if args.output == STDOUT:
            raise CliError("--output must be a file: an exported model is binary")
        inputs = [args.checkpoint_path] if args.checkpoint_path else []
        check_output_path(args.output, inputs, what="--output")
    from ._builder import create_model

    # Built first, outside the write's error handling: a missing or unreadable model is a usage error (exit 2), not a
    # failure to write the result (exit 3).
    model = create_model(args.model, pretrained=args.checkpoint_path is None, checkpoint_path=args.checkpoint_path)
    try:
        if args.format == "transformers":
            path = export(model, args.output, args.format, batch_size=args.batch_size, overwrite=args.overwrite)
        else:
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
    from ._builder import transformers_paths_note

    print(transformers_paths_note(), file=sys.stderr)
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
        table = [[r["name"], kinds[r["checksum"]], r["sha256"] or r["md5"] or r["pinned_sha256"] or "-"] for r in rows]
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
        "backend": args.backend,
        "progress": not args.quiet and sys.stderr.isatty(),
    }


def _emit(text: str | bytes, output: str | None) -> None:
    write_output(STDOUT if output is None else output, text)
    if output not in (None, STDOUT):
        _logger.info("wrote %s", output)


def _input_names(args: argparse.Namespace) -> Iterator[str]:
    """The positional inputs, then the lines of ``--files-from`` (read as the run goes; the list is opened now, so a
    missing one fails before any work)."""
    from .inference import read_file_list

    listed: Iterable[str] = ()
    if args.files_from is not None:
        try:
            listed = read_file_list(args.files_from)
        except OSError as err:
            raise CliError(str(err)) from None
    elif not args.inputs:
        raise CliError("no input files: give files, directories or patterns, or --files-from LIST")
    return itertools.chain(args.inputs, listed)


def _read_inputs(args: argparse.Namespace, paths: Iterable[str | Path]) -> list[str | Path]:
    # Everything the run reads is an input: results written over the weights would be as lost as over the audio.
    read = [*paths, *([args.checkpoint_path] if args.checkpoint_path else [])]
    if args.model.startswith("local-dir:"):
        read += list(Path(args.model[len("local-dir:") :]).expanduser().glob("*"))
    return read


def _inputs_and_destination(args: argparse.Namespace) -> list[Path]:
    """The input files, once the output has been found usable: a bad destination must fail before hours of work."""
    from .inference import expand_inputs

    paths = expand_inputs(_input_names(args), recursive=args.recursive)
    if not paths:
        raise CliError("no input files")
    if args.output is not None:
        check_output_path(args.output, _read_inputs(args, paths), what="--output")
    return paths


def cmd_tag(args: argparse.Namespace) -> int:
    from .inference import load_model, tag
    from .inference.sinks import LINE_FORMATS, render_tags

    if args.events or args.plot:
        return _tag_events(args)
    if args.stream:
        _check_stream_args(args)
    elif args.format in LINE_FORMATS:
        return _tag_lines(args)
    if args.resume:
        raise CliError("--resume continues a --format jsonl or csv --output (table and json are written whole, at "
                       "the end)")  # fmt: skip
    paths = _inputs_and_destination(args)
    model = load_model(args.model, args.checkpoint_path, labels=_label_texts(args))
    _check_classifier(model, args)
    if args.stream:
        return _tag_stream(paths, model, args)
    records = tag(paths, model, top_k=args.top_k, threshold=args.threshold, window=args.window, hop=args.hop,
                  aggregate=args.aggregate, **_runner_kwargs(args))  # fmt: skip
    _emit(render_tags(records, args.format), args.output)
    return _report_failures([r["error"] for r in records if r["error"]], len(records))


def _tag_lines(args: argparse.Namespace) -> int:
    """``--format jsonl|csv``: a record per file, written and flushed as it finishes (in input order), the inputs read
    as the run goes; into a file behind a header, which ``--resume`` continues."""
    from .inference import load_model, tag_to
    from .inference.shard import current_shard
    from .inference.sinks import is_file_output

    output = STDOUT if args.output is None else args.output
    if args.resume and output == STDOUT:
        raise CliError("--resume needs --output FILE: the output to continue")
    names = _input_names(args)
    if output != STDOUT:
        check_output_path(output, _read_inputs(args, args.inputs), what="--output")
        if not args.resume and is_file_output(output) and Path(output).exists() and Path(output).stat().st_size:
            raise CliError(f"--output {output} already exists: --resume continues it, or remove it to start afresh")
    shard = current_shard()
    if shard.distributed:
        return _tag_lines_sharded(args, output, names, shard)
    model = load_model(args.model, args.checkpoint_path, labels=_label_texts(args))
    _check_classifier(model, args)
    run = tag_to(output, names, model, format=args.format, resume=args.resume, top_k=args.top_k,
                 threshold=args.threshold, window=args.window, hop=args.hop, recursive=args.recursive,
                 aggregate=args.aggregate, **_runner_kwargs(args))  # fmt: skip
    if args.resume:
        print(f"audiokit: {output}: {run.skipped} file(s) already there, {run.written} tagged now", file=sys.stderr)
    return _report_failures(run.errors, run.written + run.skipped, earlier=run.earlier_errors)


def _event_settings(args: argparse.Namespace) -> Any:
    from .events import EventSettings

    thresholds = {}
    for item in args.class_thresholds:
        label, sep, value = item.rpartition("=")  # labels may hold "=", numbers do not
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not label.strip() or not math.isfinite(number):
            raise CliError(f"--class-thresholds takes LABEL=VALUE with a finite VALUE, got {item!r}")
        thresholds[label.strip()] = number
    given = {"threshold": args.threshold, "low_threshold": args.low_threshold, "median_filter": args.median_filter,
             "min_duration": args.min_duration, "min_gap": args.min_gap}  # fmt: skip
    kwargs = {k: v for k, v in given.items() if v is not None}
    if args.no_hysteresis:
        kwargs["low_threshold"] = None
    try:
        return EventSettings(**kwargs, class_thresholds=thresholds)
    except ValueError as err:
        raise CliError(str(err)) from None


def _plot(result: Any, events: list[Any], model: Any, output: str) -> None:
    from .audio.io import load_audio
    from .events import has_frame_output, result_frames
    from .plot import plot_file

    probs, times = result_frames(result, model if has_frame_output(model) else None)
    wave = load_audio(result.path, sample_rate=model.sample_rate)
    try:
        plot_file(wave, model.sample_rate, probs, times, model.label_names, events, output,
                  title=f"{Path(result.path).name} ({model.pretrained_cfg.name})")  # fmt: skip
    except OSError as err:
        raise OutputWriteError(f"--plot {output}: {err.strerror or err}") from None
    print(f"audiokit: wrote {output}", file=sys.stderr)


def _tag_events(args: argparse.Namespace) -> int:
    """``--events``: per file, its sound events (label, onset, offset, peak score), written and flushed as each file
    finishes; from the model's frame output where it has one, else from overlapping windows."""
    from .events import iter_file_events, render_events
    from .inference import load_model

    for flag, given in (("--stream", args.stream), ("--resume", args.resume)):
        if given:
            raise CliError(f"--events does not combine with {flag}")
    if args.backend != "eager":
        raise CliError("--events runs the models' frame outputs eagerly: --backend onnxruntime does not apply")
    if args.format == "json":
        raise CliError("--events writes an event per line or row: use --format table, jsonl or csv (not json)")
    settings = _event_settings(args)
    paths = _inputs_and_destination(args)
    if args.plot is not None:
        if len(paths) != 1:
            raise CliError(f"--plot draws one file; {len(paths)} were given")
        check_output_path(args.plot, _read_inputs(args, paths), what="--plot")
    model = load_model(args.model, args.checkpoint_path, labels=_label_texts(args))
    _check_classifier(model, args)
    try:
        settings.thresholds_for(model.label_names)
    except ValueError as err:
        raise CliError(f"--class-thresholds: {err}") from None
    runs = iter_file_events(paths, model, settings, window=args.window, hop=args.hop, **_runner_kwargs(args))
    errors: list[str] = []
    count = 0

    def tracked() -> Iterator[Any]:
        nonlocal count
        for result, events in runs:
            count += 1
            if not result.ok:
                errors.append(result.error)
            elif args.plot is not None:
                _plot(result, events, model, args.plot)
            yield result, events

    if not args.events:  # --plot alone: the picture, no event listing
        for _ in tracked():
            pass
        return _report_failures(errors, count)
    chunks = render_events(tracked(), args.format)
    if args.output in (None, STDOUT):
        for chunk in chunks:
            sys.stdout.write(chunk)
            sys.stdout.flush()
    else:
        try:
            with open(args.output, "w", encoding="utf-8", newline="") as out:
                for chunk in chunks:
                    out.write(chunk)
                    out.flush()
        except OSError as err:
            raise OutputWriteError(f"--output {args.output}: {err.strerror or err}") from None
        print(f"audiokit: wrote {args.output}", file=sys.stderr)
    return _report_failures(errors, count)


def _tag_lines_sharded(args: argparse.Namespace, output: str, names: Iterable[str], shard: Any) -> int:
    """Under torchrun: this rank's interleaved share of the files into its part of ``output``; rank 0 merges the
    parts once every rank is done (audiokit.inference.shard)."""
    from .inference import iter_inputs, load_model, tag_to
    from .inference.shard import barrier, foreign_parts, merge_parts, part_path, share
    from .inference.sinks import is_file_output

    if output == STDOUT or not is_file_output(output):
        raise CliError("under torchrun each process writes a part of --output FILE: give a regular file")
    foreign = foreign_parts(output, shard)
    if foreign:
        raise CliError(f"--output {output}: parts of a job of another size are there ({', '.join(foreign[:3])}); "
                       f"run with that many processes, or remove them")  # fmt: skip
    part = part_path(output, shard)
    if args.resume and Path(output).exists() and not Path(part).exists():
        print(f"audiokit: {output} is already merged: nothing to resume", file=sys.stderr)
        return EXIT_OK
    if not args.resume and Path(part).exists():
        raise CliError(f"{part} is there from an interrupted run: --resume continues it, or remove it")
    device = _rank_device(args, shard)
    model = load_model(args.model, args.checkpoint_path, labels=_label_texts(args))
    _check_classifier(model, args)
    mine = share(iter_inputs(names, args.recursive), shard)
    run = tag_to(part, mine, model, format=args.format, resume=args.resume, top_k=args.top_k,
                 threshold=args.threshold, window=args.window, hop=args.hop, aggregate=args.aggregate,
                 allow_empty=True, **{**_runner_kwargs(args), "device": device})  # fmt: skip
    barrier(shard)
    if shard.rank == 0:
        count = merge_parts(output, args.format, shard.world_size)
        print(f"audiokit: {output}: merged {count} record(s) from {shard.world_size} processes", file=sys.stderr)
    barrier(shard)  # the others return once the merged output has landed
    return _report_failures(run.errors, run.written + run.skipped, earlier=run.earlier_errors)


def _label_texts(args: argparse.Namespace) -> list[str] | None:
    """``--labels "a,b"`` (comma-separated, spaces around each trimmed) or ``--labels-file`` (one per line, blank
    lines skipped), for zero-shot models."""
    if args.labels is not None and args.labels_file is not None:
        raise CliError("give --labels or --labels-file, not both")
    if args.labels is not None:
        return [part.strip() for part in args.labels.split(",")] if args.labels.strip() else []
    if args.labels_file is None:
        return None
    try:
        text = Path(args.labels_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise CliError(f"--labels-file {args.labels_file}: {reason}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _check_classifier(model: Any, args: argparse.Namespace) -> None:
    if model.num_classes == 0:
        if hasattr(model, "set_labels"):
            raise CliError(f"{args.model} is a zero-shot model: give its labels (--labels 'a,b,c' or --labels-file)")
        raise CliError(f"{args.model} has no classifier; use `audiokit embed`")


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


def _report_failures(errors: list[str], total: int, earlier: int = 0) -> int:
    """Print each failure (messages name the file) and the count to stderr; exit status 1 if any. ``earlier``: failed
    files a resumed run found already recorded (reported by the run that tagged them)."""
    for message in errors:
        print(f"audiokit: error: {message}", file=sys.stderr)
    if errors or earlier:
        note = f" ({earlier} of them recorded by an earlier run)" if earlier else ""
        print(f"audiokit: {len(errors) + earlier} of {total} file(s) failed{note}", file=sys.stderr)
        return EXIT_FILE_ERRORS
    return EXIT_OK


# -- embed -------------------------------------------------------------------------------------------------------------
def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from .inference import embed, load_model

    if _is_shard_directory(args.output):
        return _embed_shards(args)
    if args.resume:
        raise CliError("--resume continues a shard directory (--output DIR/); a .npz or .npy is written whole, at the "
                       "end")  # fmt: skip
    if args.output == STDOUT and sys.stdout.isatty():
        raise CliError("--output -: refusing to write a binary .npz to a terminal; redirect it or give a file name")
    paths = _inputs_and_destination(args)
    model = load_model(args.model, args.checkpoint_path)
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


def _is_shard_directory(output: str) -> bool:
    # Path("") is the working directory: an empty name is a usage error (check_output_path), not a directory.
    return output not in ("", STDOUT) and (output.endswith(("/", os.sep)) or Path(output).is_dir())


def _embed_shards(args: argparse.Namespace) -> int:
    """``--output DIR/``: shards and an index written as files finish, the inputs read as the run goes;
    ``--resume`` continues the directory."""
    from .inference import embed_to, load_model
    from .inference.shard import current_shard

    directory = Path(args.output)
    if directory.exists() and not directory.is_dir():
        raise CliError(f"--output {args.output}: not a directory")
    names = _input_names(args)
    shard = current_shard()
    if shard.distributed:
        return _embed_shards_sharded(args, directory, names, shard)
    model = load_model(args.model, args.checkpoint_path)
    run = embed_to(directory, names, model, resume=args.resume, window=args.window, hop=args.hop,
                   recursive=args.recursive, frame_level=args.frame_level, layer=args.layer,
                   shard_rows=args.shard_rows, **_runner_kwargs(args))  # fmt: skip
    print(f"audiokit: {args.output}: {run.written} file(s) embedded now"
          + (f", {run.skipped} already there" if args.resume else ""), file=sys.stderr)  # fmt: skip
    return _report_failures(run.errors, run.written + run.skipped, earlier=run.earlier_errors)


def _embed_shards_sharded(args: argparse.Namespace, directory: Path, names: Iterable[str], shard: Any) -> int:
    """Under torchrun: this rank's interleaved share of the files into its own shard directory inside ``directory``;
    rank 0 merges them once every rank is done (audiokit.inference.shard)."""
    from .inference import embed_to, iter_inputs, load_model
    from .inference.embedding_store import INDEX_NAME
    from .inference.shard import barrier, foreign_part_directories, merge_embedding_parts, part_directory, share

    foreign = foreign_part_directories(directory, shard)
    if foreign:
        raise CliError(f"--output {directory}: parts of a job of another size are there ({', '.join(foreign[:3])}); "
                       f"run with that many processes, or remove them")  # fmt: skip
    part = part_directory(directory, shard)
    merged = (directory / INDEX_NAME).exists()
    if merged and not part.exists():
        if args.resume:
            print(f"audiokit: {directory} is already merged: nothing to resume", file=sys.stderr)
            return EXIT_OK
        raise CliError(f"--output {directory} already holds embeddings ({INDEX_NAME}): remove it to start afresh")
    if not args.resume and part.exists():
        raise CliError(f"{part} is there from an interrupted run: --resume continues it, or remove it")
    model = load_model(args.model, args.checkpoint_path)
    mine = share(iter_inputs(names, args.recursive), shard)
    run = embed_to(part, mine, model, resume=args.resume, window=args.window, hop=args.hop,
                   frame_level=args.frame_level, layer=args.layer, shard_rows=args.shard_rows, allow_empty=True,
                   **{**_runner_kwargs(args), "device": _rank_device(args, shard)})  # fmt: skip
    barrier(shard)
    if shard.rank == 0:
        count = merge_embedding_parts(directory, shard.world_size)
        print(f"audiokit: {directory}: merged {count} record(s) from {shard.world_size} processes", file=sys.stderr)
    barrier(shard)  # the others return once the merged index has landed
    return _report_failures(run.errors, run.written + run.skipped, earlier=run.earlier_errors)


def _rank_device(args: argparse.Namespace, shard: Any) -> str:
    """``--device auto`` under torchrun: this rank's own GPU (its LOCAL_RANK), else the CPU."""
    if args.device != "auto":
        return args.device
    import torch

    return f"cuda:{shard.local_rank}" if torch.cuda.is_available() else "cpu"


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
    model = load_model(args.model, args.checkpoint_path)
    result = evaluate_model(model, cfg.data, args.report, fold=args.fold, batch_size=args.batch_size,
                            device=args.device, seed=cfg.train.seed)  # fmt: skip
    scalars = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    print(to_json({"report": args.report, **scalars}))
    return _report_failures(list(result["skipped_clips"].values()), result["n_samples"] + len(result["skipped_clips"]))


# -- evaluate-events ---------------------------------------------------------------------------------------------------
def _read_durations(path: str) -> dict[str, float]:
    """A DCASE durations table: ``filename`` and ``duration`` columns (tab- or comma-separated), seconds."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CliError(f"--durations {path}: {err.strerror if isinstance(err, OSError) else err}") from None
    first = text.splitlines()[0] if text else ""
    durations = {}
    for number, row in enumerate(csv.DictReader(io.StringIO(text), delimiter="\t" if "\t" in first else ","), 2):
        name = row.get("filename") or row.get("path")
        try:
            seconds = float(row.get("duration") or "nan")
        except ValueError:
            seconds = math.nan
        if not name or not (math.isfinite(seconds) and seconds > 0):
            raise CliError(f"--durations {path}:{number}: needs a filename and a positive duration (columns: "
                           f"{', '.join(row)})")  # fmt: skip
        durations[Path(name).name] = seconds
    return durations


def cmd_evaluate_events(args: argparse.Namespace) -> int:
    from .events import evaluate_events, read_events

    try:
        predicted, reference = read_events(args.predicted), read_events(args.reference)
    except ValueError as err:
        raise CliError(str(err)) from None
    durations = _read_durations(args.durations) if args.durations else None
    if durations is not None:
        missing = sorted(set(reference) - set(durations))
        if missing:
            names = ", ".join(missing[:5])
            raise CliError(f"--durations {args.durations} lacks {len(missing)} reference file(s): {names}")
    else:
        print("audiokit: no --durations: each file is taken to end at its last event (false alarms per hour and "
              "PSDS are then only approximate)", file=sys.stderr)  # fmt: skip
    if args.output is not None:
        check_output_path(args.output, [Path(args.predicted), Path(args.reference)], what="--output")
    try:
        metrics = evaluate_events(
            predicted, reference, durations, collar=args.collar, offset_collar_rate=args.offset_collar_rate,
            segment_length=args.segment_length,
        )  # fmt: skip
    except ImportError:
        raise CliError("evaluate-events needs sed_scores_eval: pip install 'audiokit[events]'") from None
    except ValueError as err:
        raise CliError(str(err)) from None
    text = to_json({"predicted": args.predicted, "reference": args.reference, **metrics})
    if args.output is None:
        print(text)
    else:
        _emit(text + "\n", args.output)
        summary = {"event_f1": metrics["event_f1"]["micro"]["f1"], "segment_f1": metrics["segment_f1"]["micro"]["f1"],
                   "psds": metrics["psds"]}  # fmt: skip
        print(to_json(summary))
    return EXIT_OK


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


def _non_negative_float(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _embedding_layer(text: str) -> int | str:
    """``--layer``: an integer is a block index, anything else a point's name (the model checks both)."""
    try:
        return int(text)
    except ValueError:
        return text


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
    p.add_argument("inputs", nargs="*", help="audio files, directories or glob patterns")
    p.add_argument("--files-from", metavar="LIST",
                   help="also read inputs from LIST, one per line ('-': standard input), as the run goes; taken in "
                   "the list's order, not sorted or deduplicated")  # fmt: skip
    p.add_argument(
        "--model", "-m", default=default_model,
        help=f"registered name, local-dir:PATH or hf-hub:ORG/NAME[@REVISION] (default {default_model})",
    )  # fmt: skip
    p.add_argument("--checkpoint-path", "--checkpoint", dest="checkpoint_path", metavar="FILE",
                   help="a local weights file (original upstream layout or .safetensors); no download")  # fmt: skip
    p.add_argument("--backend", choices=["eager", "onnxruntime"], default="eager",
                   help="run the forward in PyTorch (eager) or in onnxruntime on the model's exported graph "
                   "(CPU, tag only; exported once and cached; pip install -e '.[onnx]')")  # fmt: skip
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
    p.add_argument("--threshold", type=_finite_float,
                   help="only labels scoring at least this; with --events, the event threshold (0.5)")  # fmt: skip
    p.add_argument("--aggregate", choices=["max", "mean"], default="max", help="clip score from windows")
    p.add_argument("--labels", help="zero-shot models (CLAP): the label texts, comma-separated ('dog barking,siren')")
    p.add_argument("--labels-file", metavar="FILE", help="zero-shot models: the label texts, one per line")
    p.add_argument("--format", choices=["table", "json", "jsonl", "csv"], default="table")
    p.add_argument(
        "--output",
        "-o",
        help="write results here ('-': stdout, the default): table and json atomically at the end; jsonl and csv a "
        "record per file as it finishes, a file behind a header (csv: OUTPUT.header.json)",
    )
    p.add_argument("--resume", action="store_true",
                   help="continue a jsonl/csv --output: skip the files it holds (same path, size and mtime), redo the "
                   "rest; refused if it was written with another model or settings")  # fmt: skip
    p.add_argument("--stream", action="store_true",
                   help="streaming models (SAT): feed each file chunk by chunk (--window seconds, default the model's "
                   "delay) and print each chunk's labels as it is computed")  # fmt: skip
    events = p.add_argument_group(
        "sound events (--events)",
        "frame outputs where the model has them (PANNs DecisionLevel, HTS-AT), else windows of 2 s every 0.5 s; "
        "--threshold is then the event threshold (default 0.5)",
    )
    events.add_argument("--events", action="store_true",
                        help="write events (label, onset, offset, peak score) per file instead of tags")  # fmt: skip
    events.add_argument("--low-threshold", type=_finite_float,
                        help="hysteresis: an event runs on while above this (default 0.2)")  # fmt: skip
    events.add_argument("--no-hysteresis", action="store_true", help="plain thresholding at --threshold")
    events.add_argument("--median-filter", type=_non_negative_float, metavar="SECONDS",
                        help="median filter over time before thresholding (default 0.45 s; 0: none)")  # fmt: skip
    events.add_argument("--min-duration", type=_non_negative_float, metavar="SECONDS",
                        help="drop shorter events (default 0.1 s)")  # fmt: skip
    events.add_argument("--min-gap", type=_non_negative_float, metavar="SECONDS",
                        help="join events of one class closer than this (default 0.1 s)")  # fmt: skip
    events.add_argument("--class-thresholds", action="append", default=[], metavar="LABEL=VALUE",
                        help="a class's own threshold (repeatable)")  # fmt: skip
    events.add_argument("--plot", metavar="PNG",
                        help="one file: draw its log-mel spectrogram, the top classes' probabilities over time and "
                        "the events (with the settings above) into PNG")  # fmt: skip
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser("embed", help="extract embeddings to .npz (ids + float32 matrix) or .npy")
    _add_inference_args(p, DEFAULT_MODEL)
    p.add_argument("--output", "-o", required=True,
                   help="output .npz or .npy (written atomically at the end; '-': stdout, .npz), or a directory "
                   "(DIR/: .npy shards and an index written as files finish; ak.open_embeddings reads it)")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="continue a shard directory: skip the files it holds (same path, size and mtime)")  # fmt: skip
    p.add_argument("--shard-rows", type=_count(1), default=8192,
                   help="rows per shard of a directory output (they wait in memory until then, or 30 s)")  # fmt: skip
    p.add_argument("--layer", type=_embedding_layer,
                   help="embedding point: pre_logits (the default), pooled, a family's own name (cls, dist, mean, ...) "
                   "or a block index (0: the first block's input; negative counts back)")  # fmt: skip
    p.add_argument("--frame-level", action="store_true", help="one row per model frame (wav2vec2: every 20 ms)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("export", help="export a model, frontend included, to ONNX, torch.export or TorchScript, or "
                       "as a transformers directory")  # fmt: skip
    p.add_argument("model", help="registered name, local-dir:PATH or hf-hub:ORG/NAME[@REVISION]")
    p.add_argument("--checkpoint-path", "--checkpoint", dest="checkpoint_path", metavar="FILE",
                   help="a local weights file for a registered name (default: download)")  # fmt: skip
    p.add_argument("--format", choices=("onnx", "exported-program", "torchscript", "transformers"), default="onnx")
    p.add_argument("--output", "-o", required=True,
                   help="file to write (atomically); for transformers the directory to write")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="transformers: replace a non-empty output directory")
    p.add_argument("--batch-size", type=_count(1), help="fix the batch dimension (needed by DyMN and AST)")
    p.add_argument("--max-seconds", type=float, default=600.0, help="longest input of a variable-length graph")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("evaluate-events", help="score predicted sound events against reference events "
                       "(sed_scores_eval: collar-based and segment-based F1, PSDS)")  # fmt: skip
    p.add_argument("predicted", help="events: `audiokit tag --events` jsonl/csv, or a DCASE table")
    p.add_argument("reference", help="reference events: a DCASE table (filename, onset, offset, event_label)")
    p.add_argument("--durations", metavar="FILE", help="a DCASE durations table (filename, duration) for the files")
    p.add_argument("--collar", type=_non_negative_float, default=0.2, help="onset collar in seconds (default 0.2)")
    p.add_argument("--offset-collar-rate", type=_non_negative_float, default=0.2,
                   help="offset collar: the larger of --collar and this times the event's length")  # fmt: skip
    p.add_argument("--segment-length", type=_positive_float, default=1.0, help="segment-based F1's segments (s)")
    p.add_argument("--output", "-o", help="write the metrics JSON here (atomically) instead of stdout")
    p.set_defaults(func=cmd_evaluate_events)

    p = sub.add_parser("evaluate", help="score a model on a dataset split; write metrics, per-class CSV and plots")
    p.add_argument("--model", "-m", required=True, help="registered name, local-dir:PATH or hf-hub:ORG/NAME[@REVISION]")
    p.add_argument("--checkpoint-path", "--checkpoint", dest="checkpoint_path", metavar="FILE",
                   help="a local weights file for a registered name")  # fmt: skip
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
    from ._hub import CheckpointLoadError, WeightsUnavailableError
    from ._registry import UnknownModelError
    from ._weights import CheckpointMismatchError
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
