"""The contract every audiokit model follows.

Data flow: waveform ``(B, T)`` -> ``frontend`` -> backbone (``forward_features``) -> pre-logits embedding
``(B, num_features)`` -> final classifier layer -> logits ``(B, num_classes)``. ``forward`` returns logits;
``predict_proba`` applies the activation the task calls for (sigmoid for multi-label, softmax for multi-class).

Named embedding points (``embed(waveform, layer=...)``, listed with their widths by ``embedding_layers``):

- ``None`` or ``"pre_logits"`` (the default): the input of the final classifier layer, ``num_features`` wide.
- ``"pooled"``: the output of the model's own global pooling, before any head layer (EfficientAT: upstream's
  ``features``, the pooled last feature map). Where no head layer sits between the pooling and the final layer
  (PaSST, SSAST, HTS-AT, BC-ResNet, ...) it is the same vector as ``"pre_logits"``.
- an integer ``k``: the hidden state after ``k`` blocks, pooled over time and frequency (the mean over the feature
  map, or over the patch tokens without the class tokens). ``0`` is the input of the first block (a stem's or patch
  embedding's output) where the family has one, ``-1`` the last block's output; what a block is, each family says
  (transformer blocks, inverted-residual blocks, Swin stages, ...). This is the numbering of transformers'
  ``hidden_states`` (index 0 = the embeddings), which the Wav2Vec2 family's ``layer=k`` already follows.
- family names where upstream has them: ``"cls"``, ``"dist"``, ``"mean"`` (AST, PaSST, SSAST), ``"raw"`` and
  ``"postprocessed"`` (VGGish), ...

Frame embeddings (``embed_frames(waveform, layer=...)``): the time axis before the model pools over time, as a
:class:`FrameEmbeddings` with ``.embeddings`` ``(B, frames, dim)`` and ``.times``, the frames' centres in seconds
(frame ``i`` spans ``i * hop`` to ``(i + 1) * hop``, ``hop`` = ``frame_hop_seconds``; models whose frames depend
on the input's length, HTS-AT's stretch, give their own ``frame_times``). CNNs: the last feature map averaged over
frequency; transformers: the patch tokens of each time column averaged over its frequency rows; the Wav2Vec2 family:
its hidden states. A family offers them by implementing ``forward_frame_embeddings`` and ``frame_hop_seconds``.

A family offers points by overriding ``embedding_blocks`` and ``embedding_points`` (widths, known without a forward)
and ``forward_embedding`` (the computation); the base class resolves names and indices and reports bad ones.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._pretrained import FrontendCfg, PretrainedCfg
from .._weights import save_pretrained_dir
from ..audio.frontend import LogMelFrontend
from ..audio.windows import window_starts
from ..layers import ClassifierHead, HeadConfig, get_output_activation, loss_for_output

_logger = logging.getLogger(__name__)

#: What ``predict_proba`` and ``embed`` take: a ``(B, T)`` batch, or a list of 1-D clips of any lengths.
Waveforms = torch.Tensor | Sequence[torch.Tensor]
#: What ``embed(layer=...)`` takes: None / ``"pre_logits"``, another name of ``embedding_layers``, or a block index.
EmbeddingLayer = int | str | None
DEFAULT_EMBEDDING = "pre_logits"


@dataclass(frozen=True)
class FrameEmbeddings:
    """What ``embed_frames`` returns: ``embeddings`` ``(B, frames, dim)`` and ``times`` ``(frames,)``, each frame's
    centre in seconds from the start of the input (float64)."""

    embeddings: torch.Tensor
    times: torch.Tensor

    @property
    def hop_seconds(self) -> float:
        """Seconds between consecutive frames (HEAR's timestamp hop)."""
        return float(self.times[1] - self.times[0]) if len(self.times) > 1 else float("nan")


def default_output_activation(task: str) -> str:
    return "sigmoid" if task == "multilabel" else "softmax"


class AudioClassifier(nn.Module):
    """Base class: subclasses build ``self.frontend`` and the backbone, and implement ``forward_features`` and
    ``forward_pre_logits``; the final classification layer lives at the dotted path ``pretrained_cfg.classifier``.

    ``num_features`` is the width of the embedding that feeds the final layer (what ``embed`` returns).
    """

    num_features: int
    pretrained_cfg: PretrainedCfg
    # Whether inference runs faster with parameters and activations in channels-last layout (NHWC). Set by families
    # where scripts/benchmark.py measured a gain; the layout never changes the results.
    prefers_channels_last: bool = False

    def __init__(self, pretrained_cfg: PretrainedCfg):
        super().__init__()
        self.pretrained_cfg = pretrained_cfg
        self.frontend = LogMelFrontend(pretrained_cfg.frontend)
        self.model_kwargs: dict[str, Any] = {}  # architecture arguments, recorded by the builder for save_pretrained
        self._label_names = pretrained_cfg.get_label_names()
        self.output_activation = default_output_activation(pretrained_cfg.task)
        self.head_cfg: HeadConfig | None = None  # set by reset_classifier(head=...): an MLP head instead of a Linear
        self._warned_short = False

    # -- properties ------------------------------------------------------------------------------------------------
    @property
    def frontend_cfg(self) -> FrontendCfg:
        return self.pretrained_cfg.frontend

    @property
    def sample_rate(self) -> int:
        return self.pretrained_cfg.frontend.sample_rate

    @property
    def num_classes(self) -> int:
        return self.pretrained_cfg.num_classes

    @property
    def task(self) -> str:
        return self.pretrained_cfg.task

    @property
    def label_names(self) -> tuple[str, ...]:
        """One name per output unit; ``class_<i>`` where the weights carry no names."""
        if self._label_names is not None and len(self._label_names) == self.num_classes:
            return self._label_names
        return tuple(f"class_{i}" for i in range(self.num_classes))

    @property
    def min_samples(self) -> int:
        """Shortest waveform the model accepts; shorter input is zero-padded to this length with a warning."""
        return self.frontend_cfg.min_samples

    @property
    def max_samples(self) -> int | None:
        """Longest input the model uses in full (fixed-length models such as AST); None when any length works.

        ``audiokit.tag``/``embed`` cut longer files into windows of this length rather than let it be truncated.
        """
        return self.frontend_cfg.max_samples

    # -- the contract ----------------------------------------------------------------------------------------------
    def forward_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` waveform -> backbone output (family-specific layout)."""
        raise NotImplementedError

    def forward_pre_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Backbone output -> embedding ``(B, num_features)``."""
        raise NotImplementedError

    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a checkpoint's keys onto this model's (families override this for their original layouts).

        It receives the flat state dict that the builder unwrapped (``module.`` prefixes already stripped); the
        default accepts our own layout unchanged.
        """
        return dict(state_dict)

    def check_checkpoint(self, checkpoint: Any, source: str) -> None:
        """Refuse a loaded checkpoint whose non-tensor content contradicts this model (families whose release files
        carry their training configuration override this); called before ``checkpoint_filter_fn``. ``checkpoint`` is
        the object as loaded, before any unwrapping."""

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.pretrained_cfg.classifier)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        embedding = self.forward_pre_logits(features)
        return embedding if pre_logits else self.get_classifier()(embedding)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` waveform at ``sample_rate`` -> logits ``(B, num_classes)``; never applies the activation."""
        return self.forward_head(self.forward_features(self.prepare_waveform(waveform)))

    @torch.no_grad()
    def predict_proba(self, waveform: Waveforms) -> torch.Tensor:
        """Probabilities ``(B, num_classes)``: sigmoid for multi-label weights, softmax for single-label ones.

        ``waveform``: a ``(B, T)`` batch, or a list of 1-D clips of different lengths, each given the result it has
        alone. A clip longer than a fixed-input model's ``max_samples`` is cut into windows of it (the last one
        aligned to the clip's end) and scored by the per-class maximum over them, as ``audiokit tag`` scores a long
        file; nothing is truncated."""
        if self.num_classes == 0:
            raise ValueError("this model has no classifier (num_classes=0); use embed() instead")
        return self._per_clip(waveform, lambda x: self.activate(self.forward(x)), "max")

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> what ``predict_proba`` reports, by ``output_activation`` (softmax, sigmoid, log_softmax, ...)."""
        return get_output_activation(self.output_activation)(logits.float())

    @torch.no_grad()
    def embed(self, waveform: Waveforms, layer: EmbeddingLayer = None) -> torch.Tensor:
        """Embedding ``(B, size)`` at ``layer`` (see the module docstring; ``embedding_layers`` lists the points and
        their sizes): by default the pre-logits embedding ``(B, num_features)``. ``waveform`` as ``predict_proba``
        takes it; a clip longer than ``max_samples`` gets the mean of its windows' embeddings."""
        key = self.resolve_embedding_layer(layer)

        def compute(x: torch.Tensor) -> torch.Tensor:
            x = self.prepare_waveform(x)
            if key == DEFAULT_EMBEDDING:
                return self.forward_head(self.forward_features(x), pre_logits=True)
            return self.forward_embedding(x, key)

        return self._per_clip(waveform, compute, "mean")

    def _per_clip(
        self, waveform: Waveforms, compute: Callable[[torch.Tensor], torch.Tensor], reduce: str
    ) -> torch.Tensor:
        """``compute`` over a batch, or clip by clip where the clips differ in length or exceed ``max_samples``:
        pieces of equal length are batched together (so no clip is zero-padded to another's length, which would
        move its result), and each clip's window rows are reduced (``"max"`` or ``"mean"``) into its row."""
        limit = self.max_samples
        if isinstance(waveform, torch.Tensor) and (limit is None or waveform.dim() != 2 or waveform.shape[-1] <= limit):
            return compute(waveform)  # a batch as it is (prepare_waveform checks its layout)
        clips = self._clips(waveform)
        pieces: list[tuple[int, torch.Tensor]] = []
        for index, clip in enumerate(clips):
            n = clip.shape[-1]
            if limit is not None and n > limit:
                pieces += [(index, clip[s : s + limit]) for s in window_starts(n, limit, limit)]
            else:
                pieces.append((index, clip))
        rows: list[torch.Tensor | None] = [None] * len(pieces)
        by_length: dict[int, list[int]] = {}
        for position, (_, piece) in enumerate(pieces):
            by_length.setdefault(piece.shape[-1], []).append(position)
        for positions in by_length.values():
            out = compute(torch.stack([pieces[p][1] for p in positions]))
            for p, row in zip(positions, out):
                rows[p] = row
        per_clip: list[list[torch.Tensor]] = [[] for _ in clips]
        for (index, _), row in zip(pieces, rows):
            per_clip[index].append(row)  # type: ignore[arg-type]
        combine = (lambda r: r.amax(dim=0)) if reduce == "max" else (lambda r: r.mean(dim=0))
        return torch.stack([combine(torch.stack(r)) if len(r) > 1 else r[0] for r in per_clip])

    @staticmethod
    def _clips(waveform: Waveforms) -> list[torch.Tensor]:
        """A ``(B, T)`` batch or a list of 1-D clips -> the clips, each checked (one line naming the clip)."""
        if isinstance(waveform, torch.Tensor):
            return list(waveform.unbind(0))
        if not isinstance(waveform, (list, tuple)) or not waveform:
            raise TypeError(f"expected a (batch, samples) tensor or a non-empty list of 1-D tensors, got {waveform!r}")
        for i, clip in enumerate(waveform):
            if not isinstance(clip, torch.Tensor):
                raise TypeError(f"clip {i}: expected a torch.Tensor, got {type(clip).__name__}")
            if clip.dim() != 1 or clip.shape[0] == 0:
                raise ValueError(f"clip {i}: expected a non-empty 1-D waveform, got shape {tuple(clip.shape)}")
        return list(waveform)

    @torch.no_grad()
    def embed_frames(self, waveform: torch.Tensor, layer: EmbeddingLayer = None) -> FrameEmbeddings:
        """Frame embeddings with their times (see the module docstring): ``.embeddings`` ``(B, frames, dim)``,
        ``.times`` ``(frames,)`` centres in seconds. ``layer``: as the family's ``forward_frame_embeddings`` takes."""
        if not self.has_frame_embeddings:
            raise ValueError(
                f"{self.pretrained_cfg.name} has no frame embeddings (its architecture offers none): use embed(), or "
                "embed in windows (audiokit embed --window S --hop S)"
            )
        embeddings = self.forward_frame_embeddings(waveform, layer)
        num_samples = max(int(waveform.shape[-1]), self.min_samples)
        return FrameEmbeddings(embeddings, self.frame_centres(num_samples, embeddings.shape[1]))

    @property
    def has_frame_embeddings(self) -> bool:
        return type(self).forward_frame_embeddings is not AudioClassifier.forward_frame_embeddings

    def forward_frame_embeddings(self, waveform: torch.Tensor, layer: EmbeddingLayer = None) -> torch.Tensor:
        """``(B, T)`` waveform -> frame embeddings ``(B, frames, dim)``; families with a time axis implement it."""
        raise NotImplementedError(f"{type(self).__name__} has no frame embeddings")

    # Whether frame spacing depends on the input's length (HTS-AT stretches any input onto one grid): then the
    # family's ``frame_times(num_samples)`` gives the spans, else frames are ``frame_hop_seconds`` apart.
    length_dependent_frames = False

    def frame_centres(self, num_samples: int, count: int) -> torch.Tensor:
        """Centres in seconds (float64) of the ``count`` frames of an input of ``num_samples``: uniform,
        ``(i + 0.5) * frame_hop_seconds``, or from the family's ``frame_times`` where spacing depends on the length.
        (PANNs' SED segments keep uniform centres: only their last span is stretched to the clip's end.)"""
        if self.length_dependent_frames:
            return self.frame_times(num_samples).mean(dim=1)  # type: ignore[attr-defined]
        return (torch.arange(count, dtype=torch.float64) + 0.5) * float(self.frame_hop_seconds)  # type: ignore[attr-defined]

    # -- embedding points ------------------------------------------------------------------------------------------
    def embedding_blocks(self) -> dict[int, int]:
        """``{index: width}`` of the per-block points, consecutive indices (``0`` the first block's input where the
        family offers it); empty for a family without them."""
        return {}

    def embedding_points(self) -> dict[str, int]:
        """``{name: width}`` of the family's named points other than ``"pre_logits"`` (``"pooled"``, upstream's
        names), in the order they occur in the network."""
        return {}

    @property
    def embedding_layers(self) -> dict[int | str, int]:
        """Every point ``embed(layer=...)`` accepts, in network order, with its embedding size: the block indices,
        the named points, ``"pre_logits"`` last. Computed from the architecture, without a forward."""
        layers: dict[int | str, int] = dict(self.embedding_blocks())
        layers.update(self.embedding_points())
        layers[DEFAULT_EMBEDDING] = self.num_features
        return layers

    def resolve_embedding_layer(self, layer: EmbeddingLayer) -> int | str:
        """``layer`` -> the key of ``embedding_layers`` it means (negative block indices count back from the last);
        a ``ValueError`` naming the model and the valid choices otherwise."""
        if layer is None:
            return DEFAULT_EMBEDDING
        name = self.pretrained_cfg.name
        if isinstance(layer, str):
            if layer in self.embedding_points() or layer == DEFAULT_EMBEDDING:
                return layer
            raise ValueError(f"{name} has no embedding layer {layer!r}; embedding_layers: {self._describe_layers()}")
        if isinstance(layer, bool):  # an int subclass, and never meant as a block index
            raise TypeError(f"layer must be a block index or a name, got {layer!r}")
        try:
            index = operator.index(layer)
        except TypeError:
            raise TypeError(f"layer must be a block index or a name, got {type(layer).__name__}") from None
        blocks = sorted(self.embedding_blocks())
        if not blocks:
            raise ValueError(
                f"{name} has no per-block embeddings (layer={index}); embedding_layers: {self._describe_layers()}"
            )
        first, last = blocks[0], blocks[-1]
        resolved = index if index >= 0 else last + 1 + index
        if not first <= resolved <= last:
            raise ValueError(
                f"{name}: block {index} is out of range: blocks are {first}..{last} "
                f"(-{last + 1 - first}..-1 count back from the last)"
            )
        return resolved

    def _describe_layers(self) -> str:
        blocks = sorted(self.embedding_blocks())
        parts = [f"{blocks[0]}..{blocks[-1]} (blocks)"] if blocks else []
        parts += [repr(n) for n in self.embedding_layers if isinstance(n, str)]
        return ", ".join(parts)

    def forward_embedding(self, waveform: torch.Tensor, layer: int | str) -> torch.Tensor:
        """Prepared ``(B, T)`` waveform -> the embedding ``(B, size)`` at ``layer``, a key of ``embedding_layers``
        other than ``"pre_logits"`` (already resolved: block indices are non-negative). Families that list points
        compute them here."""
        raise NotImplementedError(f"{type(self).__name__} lists embedding layer {layer!r} but does not compute it")

    def prepare_waveform(self, waveform: torch.Tensor) -> torch.Tensor:
        """Check the input layout and zero-pad input shorter than ``min_samples`` (saying so once)."""
        if not isinstance(waveform, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor waveform, got {type(waveform).__name__}")
        if waveform.dim() != 2:
            hint = " (add a batch dimension: wave[None])" if waveform.dim() == 1 else ""
            raise ValueError(f"expected a waveform of shape (batch, samples), got {tuple(waveform.shape)}{hint}")
        if not waveform.is_floating_point():
            raise TypeError(f"expected a floating-point waveform in [-1, 1], got dtype {waveform.dtype}")
        short = self.min_samples - waveform.shape[-1]
        if short > 0:
            if not self._warned_short:
                _logger.warning(
                    "input of %d samples is shorter than the %d this model needs; zero-padding at the end",
                    waveform.shape[-1],
                    self.min_samples,
                )
                self._warned_short = True
            waveform = torch.nn.functional.pad(waveform, (0, short))
        return waveform

    def reset_classifier(
        self,
        num_classes: int,
        label_names: list[str] | tuple[str, ...] | None = None,
        head: HeadConfig | None = None,
    ) -> None:
        """Replace the final layer with a freshly initialised one for ``num_classes`` outputs.

        ``num_classes=0`` makes a pure embedder: ``forward`` then returns the ``num_features``-dim embedding.
        ``head`` builds a ``ClassifierHead`` instead of a Linear: hidden layers with their activation, dropout and
        normalisation, and the output activation (``predict_proba``; the training loss follows it).
        """
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if label_names is not None and len(label_names) != num_classes:
            raise ValueError(f"{len(label_names)} label names given for {num_classes} classes")
        task = self.pretrained_cfg.task
        if head is not None:
            output = head.output_for(task)
            loss_for_output(output, task)  # refuses an output activation the task cannot use, with the reason
        old = self.get_classifier()
        if head is not None:
            new: nn.Module = ClassifierHead(self.num_features, num_classes, head)
        else:
            new = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        reference = next(old.parameters(), None)
        if reference is not None:
            new = new.to(device=reference.device, dtype=reference.dtype)
        self.set_submodule(self.pretrained_cfg.classifier, new)
        self.head_cfg = head
        self.output_activation = head.output_for(task) if head is not None else default_output_activation(task)
        same = num_classes == self.num_classes
        self._label_names = tuple(label_names) if label_names is not None else (self._label_names if same else None)
        self.pretrained_cfg = self.pretrained_cfg.replace(
            num_classes=num_classes, label_names=self._label_names, label_set=None
        )

    # -- persistence -----------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors``; ``create_model("local-dir:<directory>")`` reloads it."""
        from ..layers.fusion import is_batchnorm_folded

        if is_batchnorm_folded(self):
            raise ValueError(
                "this model's BatchNorm layers were folded into its convolutions for inference; its weights no longer "
                "match the architecture: save the model before folding"
            )

        return save_pretrained_dir(self, Path(directory))
