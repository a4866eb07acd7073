"""audiokit: pretrained audio classification with the original checkpoints and preprocessing."""

__version__ = "0.1.0"

from . import models as models
from ._builder import create_model as create_model
from ._pretrained import FrontendCfg as FrontendCfg
from ._pretrained import PretrainedCfg as PretrainedCfg
from ._registry import UnknownModelError as UnknownModelError
from ._registry import get_pretrained_cfg as get_pretrained_cfg
from ._registry import is_model as is_model
from ._registry import list_models as list_models
from ._weights import CheckpointMismatchError as CheckpointMismatchError
from .audio import AudioLoadError as AudioLoadError
from .audio import LogMelFrontend as LogMelFrontend
from .audio import load_audio as load_audio
from .export import export as export
from .inference import embed as embed
from .inference import embed_to as embed_to
from .inference import open_embeddings as open_embeddings
from .inference import tag as tag
from .inference import tag_to as tag_to
from .inference import top_k as top_k
from .models import AudioClassifier as AudioClassifier
