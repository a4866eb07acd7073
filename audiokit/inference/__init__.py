"""Batch inference over audio files: tagging (labels and scores) and embedding extraction, as a pipeline of stages.

    sources -> decode -> window -> batch -> forward -> aggregate -> sinks

Each stage is a module with one job: ``sources`` (paths, directories, patterns, file lists, read lazily),
``decode`` (DataLoader workers; long files block by block), ``window`` (spans of a signal), ``batch`` (equal-length
windows grouped), ``forward`` (the backend interface and the eager PyTorch backend), ``aggregate`` (windows to a
file's result; scores to labels), ``sinks`` (records, their formats, streamed and resumable outputs),
``embedding_store`` (embedding shards and their index, written as they come, read lazily). ``placement``
decides devices, decoding processes and CPU streams; ``runner`` wires the stages; ``api`` holds ``tag``, ``tag_to``,
``embed`` and ``embed_to``.
"""

from .aggregate import _check_selection as _check_selection
from .aggregate import top_k as top_k
from .api import DEFAULT_MODEL as DEFAULT_MODEL
from .api import Embeddings as Embeddings
from .api import EmbedRun as EmbedRun
from .api import TagRun as TagRun
from .api import embed as embed
from .api import embed_to as embed_to
from .api import load_model as load_model
from .api import tag as tag
from .api import tag_to as tag_to
from .batch import Batch as Batch
from .batch import Batcher as Batcher
from .decode import STREAM_SECONDS as STREAM_SECONDS
from .decode import _AudioFiles as _AudioFiles
from .decode import _Decoded as _Decoded
from .embedding_store import EmbeddingStore as EmbeddingStore
from .embedding_store import open_embeddings as open_embeddings
from .forward import Backend as Backend
from .forward import BatchHandle as BatchHandle
from .forward import EagerBackend as EagerBackend
from .placement import MAX_CPU_STREAMS as MAX_CPU_STREAMS
from .placement import Placement as Placement
from .placement import default_cpu_streams as default_cpu_streams
from .placement import default_num_workers as default_num_workers
from .placement import plan_placement as plan_placement
from .placement import resolve_device as resolve_device
from .placement import usable_cores as usable_cores
from .results import FileResult as FileResult
from .results import Segment as Segment
from .runner import InferenceRunner as InferenceRunner
from .sinks import ResumeError as ResumeError
from .sinks import render_tags as render_tags
from .sinks import tag_record as tag_record
from .sources import expand_inputs as expand_inputs
from .sources import iter_inputs as iter_inputs
from .sources import read_file_list as read_file_list
from .window import AUTO_WINDOW_CLIPS as AUTO_WINDOW_CLIPS
from .window import STREAM_WINDOW_SECONDS as STREAM_WINDOW_SECONDS
from .window import Windowing as Windowing
from .window import _stream_windows as _stream_windows
from .window import window_starts as window_starts
