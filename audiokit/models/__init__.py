"""Model families; importing this package registers every architecture (no I/O happens at import)."""

from . import ast as ast
from . import bcresnet as bcresnet
from . import clap as clap
from . import efficientat as efficientat
from . import hf_auto as hf_auto
from . import htsat as htsat
from . import hubert as hubert
from . import panns as panns
from . import passt as passt
from . import sat as sat
from . import ssast as ssast
from . import vggish as vggish
from . import wav2vec2 as wav2vec2
from . import wavlm as wavlm
from ._base import AudioClassifier as AudioClassifier
