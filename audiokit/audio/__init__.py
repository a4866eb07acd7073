"""Audio input: decoding, resampling, and the log-mel frontend."""

from .frontend import LogMelFrontend as LogMelFrontend
from .io import AudioLoadError as AudioLoadError
from .io import load_audio as load_audio
