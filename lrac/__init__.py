"""lrac: low-resource neural speech codecs (LRAC challenge baseline and successors).

Quick use::

    import lrac
    codec = lrac.Codec.pretrained("t1")            # or lrac.Codec.load("model.pt")
    tokens = codec.encode(wav, bitrate_bps=6000)   # wav [B, 1, T] -> [B, n_q, frames]
    wav_hat = codec.decode(tokens, length=wav.shape[-1])   # [B, 1, T]
"""

import importlib
from typing import Any

from . import audio  # noqa: F401  (lrac.audio.load_audio etc.)
from .config import Config, ConfigError, load_config, preset_names

__version__ = "0.1.0"

# Imported on first use: torch takes a second or more to import, which a command that refuses
# a bad file or prints its version should not pay.
_LAZY = {"Codec": ".codec", "StreamEncoder": ".codec", "StreamDecoder": ".codec",
         "Encoder": ".models", "Decoder": ".models", "ResidualVQ": ".quant"}

__all__ = ["Config", "ConfigError", "load_config", "preset_names", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'lrac' has no attribute {name!r}")
