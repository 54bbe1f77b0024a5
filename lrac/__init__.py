"""lrac: low-resource neural speech codecs (LRAC challenge baseline and successors).

Quick use::

    import lrac
    codec = lrac.Codec.pretrained("t1")            # or lrac.Codec.load("model.pt")
    tokens = codec.encode(wav, bitrate_bps=6000)   # wav [B, 1, T] -> [B, n_q, frames]
    wav_hat = codec.decode(tokens, length=wav.shape[-1])   # [B, 1, T]
"""

from . import audio  # noqa: F401  (lrac.audio.load_audio etc.)
from .config import Config, ConfigError, load_config, preset_names

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "load_config", "preset_names", "__version__"]

from .codec import Codec, StreamDecoder, StreamEncoder  # noqa: E402
from .models import Decoder, Encoder  # noqa: E402
from .quant import ResidualVQ  # noqa: E402

__all__ += ["Codec", "StreamEncoder", "StreamDecoder", "Encoder", "Decoder", "ResidualVQ"]
