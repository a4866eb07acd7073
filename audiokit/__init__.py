"""audiokit: pretrained audio classification with the original checkpoints and preprocessing."""

__version__ = "0.1.0"

from . import models as models  # noqa: E402  (registers every architecture)
from ._builder import CheckpointMismatchError as CheckpointMismatchError  # noqa: E402
from ._builder import create_model as create_model  # noqa: E402
from ._pretrained import FrontendCfg as FrontendCfg  # noqa: E402
from ._pretrained import PretrainedCfg as PretrainedCfg  # noqa: E402
from ._registry import UnknownModelError as UnknownModelError  # noqa: E402
from ._registry import get_pretrained_cfg as get_pretrained_cfg  # noqa: E402
from ._registry import is_model as is_model  # noqa: E402
from ._registry import list_models as list_models  # noqa: E402
from .audio import AudioLoadError as AudioLoadError  # noqa: E402
from .audio import LogMelFrontend as LogMelFrontend  # noqa: E402
from .audio import load_audio as load_audio  # noqa: E402
from .inference import embed as embed  # noqa: E402
from .inference import tag as tag  # noqa: E402
from .inference import top_k as top_k  # noqa: E402
from .models import AudioClassifier as AudioClassifier  # noqa: E402
