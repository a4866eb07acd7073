"""Fine-tuning: configuration, datasets with a decoded-audio cache, and the training loop."""

from .config import ConfigError as ConfigError
from .config import RunConfig as RunConfig
from .config import TrainConfig as TrainConfig
from .loop import FitResult as FitResult
from .loop import finetune as finetune
from .loop import fit as fit
