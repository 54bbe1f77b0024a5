"""Run an exported codec (``lrac-export``, lrac/export.py) with onnxruntime: numpy in, numpy out.

This module imports neither torch nor the rest of lrac, so it can be copied beside the exported
files into an application. Usage::

    from lrac.runtime import OnnxCodec
    codec = OnnxCodec("t1-onnx/")                    # the folder lrac-export wrote
    enc = codec.stream_encoder(bitrate_bps=6000)
    tokens = [enc.push(chunk) for chunk in chunks] + [enc.flush()]   # [n_q, f] int64 each
    dec = codec.stream_decoder()
    audio = [dec.push(t) for t in tokens] + [dec.flush()]            # [n] float32 each

Streams run the graphs on the largest exported chunk size that the buffered input fills (e.g. 4
frames, else 1), so a caller that pushes 10 ms at a time gets one 10 ms step per push. Each call runs
the one graph the sidecar names for the stream's state layout and the chunk's shape; a graph's
onnxruntime session is made on its first call (a stream's first calls) and kept. Tokens are
the PyTorch float32 streaming path's (lrac/codec.py) and ``.lrac`` files are interchangeable
between the engines: the sidecar carries the model identity the bitstream header names.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

SIDECAR = "lrac-onnx.json"
ONNX_FORMAT = "lrac-onnx"
FORMAT_VERSION = 2
_DTYPES = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "bool": np.bool_}


class ModelFileError(ValueError):
    """A missing, corrupted or mismatched exported model; the message says which file and why."""


def _session(path: Path, threads: int, prepack: bool):
    """An onnxruntime session for the graph file ``path``. ``prepack``: let onnxruntime copy the
    weights of the matrix products into its packed layouts. Each session packs its own copy;
    without packing, every graph of a variant reads the one mapped weights file, which a stream
    (alternating between a few graphs each frame) keeps in cache: for the float32 graphs that is
    the faster choice, for int8 the packed kernels win (docs/onnx.md, "Speed")."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelFileError("the ONNX engine needs onnxruntime: pip install 'lrac[runtime]'") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    try:   # (by path: onnxruntime reads the weights file beside the graph)
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types, with long messages
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: onnxruntime cannot load it ({first[:200]})") from None


class OnnxCodec:
    """An exported codec: the sidecar ``lrac-onnx.json`` and its ``encoder*.onnx`` / ``decoder*.onnx``.

    Args:
        model_dir: the folder ``lrac-export`` (or ``Codec.export_onnx``) wrote.
        variant: ``float32`` or ``int8`` (the weights of the matrix products in 8 bits), as exported.
        threads: onnxruntime threads per graph (1: what a real-time caller on a small device has).
    """

    def __init__(self, model_dir: str | Path, variant: str = "float32", threads: int = 1) -> None:
        self.model_dir = Path(model_dir)
        sidecar_path = self.model_dir / SIDECAR
        if not sidecar_path.is_file():
            raise ModelFileError(f"{self.model_dir}: no {SIDECAR} (not a folder written by lrac-export)")
        try:
            meta = json.loads(sidecar_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"{sidecar_path}: unreadable ({type(exc).__name__})") from None
        if not isinstance(meta, dict) or meta.get("format") != ONNX_FORMAT:
            raise ModelFileError(f"{sidecar_path}: not an lrac ONNX export")
        if meta.get("version") != FORMAT_VERSION:
            raise ModelFileError(f"{sidecar_path}: export format version {meta.get('version')}, this "
                                 f"lrac reads version {FORMAT_VERSION}: export the model again")
        if variant not in meta.get("variants", []):
            raise ModelFileError(f"{self.model_dir}: no {variant} graphs exported (have: "
                                 f"{', '.join(meta.get('variants', [])) or 'none'})")
        self.meta, self.variant = meta, variant
        try:
            self.model_id = bytes.fromhex(meta["model_id"])
            self.sample_rate = int(meta["sample_rate"])
            self.hop_length = int(meta["hop_length"])
            self.bits_per_index = int(meta["bits_per_index"])
            self.codebook_size = int(meta["codebook_size"])
            self.n_stages = int(meta["n_stages"])
            self._stages = {int(b): int(n) for b, n in meta["bitrates_bps"].items()}
            self.chunk_frames = sorted(int(n) for n in meta["chunk_frames"])
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise ModelFileError(f"{sidecar_path}: incomplete or corrupted ({type(exc).__name__}: {exc})") from None
        self.threads = threads
        folder = self.model_dir / variant
        for name, digest in meta.get("files", {}).items():   # this variant's graphs and weights
            if name.startswith(f"{variant}/"):
                check_file(self.model_dir / name, digest, SIDECAR, "export the model again")
        self.encoder_graphs = _Graphs(self, "encoder", folder)
        self.decoder_graphs = _Graphs(self, "decoder", folder)

    # -- what the codec is -----------------------------------------------------------------------------
    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def bitrates_bps(self) -> list[int]:
        return sorted(self._stages)

    def stages_for_bitrate(self, bitrate_bps: int) -> int:
        if bitrate_bps not in self._stages:
            valid = ", ".join(str(b) for b in self.bitrates_bps)
            raise ValueError(f"unsupported bitrate {bitrate_bps} bit/s; this codec supports: {valid}")
        return self._stages[bitrate_bps]

    def bitrate_for_stages(self, n_q: int) -> int:
        return int(round(n_q * self.bits_per_index * self.frame_rate))

    # -- the engine ------------------------------------------------------------------------------------
    def load_graph(self, side: str, graph: str) -> Callable:
        """The runner of ``side``'s graph file ``graph``: ``(chunk, state) -> (output, new state
        values)``, here an onnxruntime session (an engine running the same graphs otherwise, e.g.
        :mod:`lrac.tvm_engine`, overrides this and keeps the stream loop)."""
        path = self.model_dir / self.variant / graph
        if not path.is_file():
            raise ModelFileError(f"{path}: file not found")
        session = _session(path, self.threads, prepack=self.variant != "float32")
        props = session.get_modelmeta().custom_metadata_map
        model_id = self.model_id.hex()
        if props.get("lrac.model_id") != model_id or props.get("lrac.side") != side:
            raise ModelFileError(f"{path}: made for another model or side ({props.get('lrac.side')} of "
                                 f"{props.get('lrac.model_id')}; this export is {model_id})")
        return OrtGraph(session, self.meta[side]["input"])

    # -- coding ----------------------------------------------------------------------------------------
    def stream_encoder(self, bitrate_bps: int = 6000) -> "OnnxStreamEncoder":
        return OnnxStreamEncoder(self, bitrate_bps)

    def stream_decoder(self) -> "OnnxStreamDecoder":
        return OnnxStreamDecoder(self)

    def encode(self, audio: np.ndarray, bitrate_bps: int = 6000, chunk_samples: int | None = None
               ) -> np.ndarray:
        """Mono audio ``[T]`` at :attr:`sample_rate` -> tokens ``[n_q, ceil(T / hop)]`` int64, pushed
        ``chunk_samples`` at a time (default: all at once; the graphs still run chunk by chunk).
        Float samples beyond [-1, 1] are clipped, int16 PCM scaled, as in PyTorch."""
        audio = np.asarray(audio).reshape(-1)
        size = chunk_samples or max(len(audio), 1)
        stream = self.stream_encoder(bitrate_bps)
        parts = [stream.push(audio[i:i + size]) for i in range(0, len(audio), size)]
        return np.concatenate(parts + [stream.flush()], axis=-1)

    def decode(self, tokens: np.ndarray, length: int | None = None, chunk_frames: int | None = None
               ) -> np.ndarray:
        """Tokens ``[n_q, F]`` -> audio ``[F * hop]`` float32 (cropped to ``length`` when given),
        pushed ``chunk_frames`` at a time (default: all at once)."""
        tokens = np.asarray(tokens)
        size = chunk_frames or max(tokens.shape[-1], 1)
        stream = self.stream_decoder()
        parts = [stream.push(tokens[:, i:i + size]) for i in range(0, tokens.shape[-1], size)]
        return np.concatenate(parts + [stream.flush(length)])


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_file(path: Path, digest: str | None, sidecar: str, remedy: str) -> None:
    """:class:`ModelFileError` unless ``path`` exists with the checksum its ``sidecar`` records."""
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    if file_sha256(path) != digest:
        raise ModelFileError(f"{path}: corrupted or replaced (its checksum is not the one "
                             f"{sidecar} records): {remedy}")


class _Graphs:
    """One side's graphs: one per (state layout, chunk rows, chunk frames), as the sidecar lists them;
    each loaded by the codec (an onnxruntime session here) on its first call."""

    def __init__(self, codec: OnnxCodec, side: str, folder: Path) -> None:
        self.codec, self.side, self.folder = codec, side, folder
        try:
            meta = codec.meta[side]
            self.chunk_name = meta["input"]
            self.unit = codec.hop_length if self.chunk_name == "audio" else 1
            self.states = [(s["name"], _DTYPES[s["dtype"]], int(s["rank"])) for s in meta["states"]]
            self.state_names = [name for name, _, _ in self.states]
            self.branches = {(int(b["layout"]), int(b["rows"]), int(b["frames"])): (b["graph"], int(b["next"]))
                             for b in meta["branches"]}
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelFileError(f"{codec.model_dir / SIDECAR}: incomplete or corrupted "
                                 f"({type(exc).__name__}: {exc})") from None
        self.runners: dict = {}
        self.runner(next(iter(self.branches.values()))[0])   # a bad graph file fails here, not mid-stream

    def runner(self, graph: str) -> Callable:
        """The callable that runs the graph file ``graph``: ``(chunk, state) -> (output, new state
        values)``, made by the codec's :meth:`OnnxCodec.load_graph` on the first call and kept."""
        if graph not in self.runners:
            self.runners[graph] = self.codec.load_graph(self.side, graph)
        return self.runners[graph]


class OrtGraph:
    """One graph in an onnxruntime session: ``(chunk, state) -> (output, new state values)``.
    State values made by another engine are read through their ``numpy()`` (the fallback of an
    engine that could not compile a graph)."""

    def __init__(self, session, chunk_name: str) -> None:
        self.session, self.chunk_name = session, chunk_name
        self.inputs = [i.name for i in session.get_inputs()]
        self.outputs = [o.name for o in session.get_outputs()]

    def __call__(self, chunk: np.ndarray, state: dict) -> tuple[np.ndarray, list]:
        feeds = {}
        for n in self.inputs:
            v = chunk if n == self.chunk_name else state[n]
            feeds[n] = v if isinstance(v, np.ndarray) else v.numpy()
        values = self.session.run(self.outputs, feeds)
        return values[0], values[1:]


class _GraphStream:
    """One stream through a side's graphs: its state layout and state tensors.

    (The state stays in numpy between calls: handing onnxruntime's own output values back to it
    as inputs, ``run_with_ort_values``, made a stream's calls slower, not faster.)"""

    def __init__(self, graphs: _Graphs) -> None:
        self.graphs = graphs
        # the start layout's values are inside its graphs: the state starts as empty placeholders
        self.state = {name: np.zeros((0,) * rank, dtype=dtype) for name, dtype, rank in graphs.states}
        self.layout = 0
        self.finished = False

    def check_open(self) -> None:
        if self.finished:
            raise RuntimeError("stream already flushed; start a new stream")

    def step(self, chunk: np.ndarray) -> np.ndarray:
        g = self.graphs
        key = (self.layout, chunk.shape[1], chunk.shape[2] // g.unit)
        if key not in g.branches:
            raise ValueError(f"no {g.side} graph for a chunk of {key[2]} frames and {key[1]} rows "
                             f"(exported: {self.graphs.codec.chunk_frames} frames)")
        graph, self.layout = g.branches[key]
        output, values = g.runner(graph)(chunk, self.state)
        self.state = dict(zip(g.state_names, values))
        return output


def _plan(frames: int, sizes: list[int]) -> list[int]:
    """Chunk sizes (largest first) covering ``frames`` whole frames with the exported sizes."""
    plan = []
    for size in sorted(sizes, reverse=True):
        while frames >= size:
            plan.append(size)
            frames -= size
    return plan


class OnnxStreamEncoder:
    """``push(audio [n])`` -> tokens ``[n_q, f]`` completed so far; ``flush()`` pads the last
    partial frame with zeros and returns the rest (as :class:`lrac.StreamEncoder`)."""

    def __init__(self, codec: OnnxCodec, bitrate_bps: int) -> None:
        self.codec = codec
        self.n_q = codec.stages_for_bitrate(bitrate_bps)
        self.stream = _GraphStream(codec.encoder_graphs)
        self.pending = np.zeros(0, dtype=np.float32)
        self.clipped = False

    def _samples(self, audio: Any) -> np.ndarray:
        """Float32 samples ``[n]`` by the PyTorch engine's rule (``lrac.codec.as_float_audio``): int16
        PCM scaled by 1/32768, float samples clipped to [-1, 1] (with a warning, once a stream)."""
        x = np.asarray(audio)
        if x.dtype == np.int16:
            return x.reshape(-1).astype(np.float32) / 32768.0
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"audio must be float samples in [-1, 1] or int16 PCM, got {x.dtype}")
        x = x.astype(np.float32).reshape(-1)
        if not np.isfinite(x).all():
            raise ValueError("audio contains NaN or infinite samples")
        peak = float(np.abs(x).max()) if x.size else 0.0
        if peak <= 1.0:
            return x
        if not self.clipped:
            self.clipped = True
            warnings.warn(f"audio stream: samples above full scale (up to {peak:.3g}); clipped to [-1, 1]",
                          stacklevel=3)
        return np.clip(x, -1.0, 1.0)

    def _run(self, frames: int) -> list[np.ndarray]:
        hop, out = self.codec.hop_length, []
        for size in _plan(frames, self.codec.chunk_frames):
            chunk, self.pending = self.pending[: size * hop], self.pending[size * hop:]
            out.append(self.stream.step(chunk[None, None])[0, : self.n_q])
        return out

    def push(self, audio: Any) -> np.ndarray:
        self.stream.check_open()
        x = self._samples(audio)
        self.pending = np.concatenate([self.pending, x])
        parts = self._run(len(self.pending) // self.codec.hop_length)
        return np.concatenate(parts, -1) if parts else np.zeros((self.n_q, 0), dtype=np.int64)

    def flush(self) -> np.ndarray:
        self.stream.check_open()
        self.stream.finished = True
        pad = (-len(self.pending)) % self.codec.hop_length
        self.pending = np.concatenate([self.pending, np.zeros(pad, dtype=np.float32)])
        parts = self._run(len(self.pending) // self.codec.hop_length)
        parts.append(self.stream.step(np.zeros((1, 1, 0), dtype=np.float32))[0, : self.n_q])
        return np.concatenate(parts, -1)


class OnnxStreamDecoder:
    """``push(tokens [n_q, f])`` -> audio ``[n]`` completed so far; ``flush(length)`` returns the
    rest, cropped so that the total is ``length`` samples when given (as :class:`lrac.StreamDecoder`)."""

    def __init__(self, codec: OnnxCodec) -> None:
        self.codec = codec
        self.stream = _GraphStream(codec.decoder_graphs)
        self.pending: np.ndarray | None = None
        self.emitted = 0

    def _check(self, tokens: Any) -> np.ndarray:
        t = np.asarray(tokens)
        if t.ndim != 2 or not np.issubdtype(t.dtype, np.integer):
            raise ValueError(f"tokens must be integers shaped [n_q, frames], got {t.dtype} {t.shape}")
        self.codec.stages_for_bitrate(self.codec.bitrate_for_stages(t.shape[0]))
        if t.size and (t.min() < 0 or t.max() >= self.codec.codebook_size):
            raise ValueError(f"token values must be in 0..{self.codec.codebook_size - 1}")
        if self.pending is not None and t.shape[0] != self.pending.shape[0]:
            raise ValueError(f"tokens of {t.shape[0]} stages in a stream of {self.pending.shape[0]}")
        return t.astype(np.int64)

    def _run(self, frames: int) -> list[np.ndarray]:
        out = []
        for size in _plan(frames, self.codec.chunk_frames):
            chunk, self.pending = self.pending[:, :size], self.pending[:, size:]
            out.append(self.stream.step(np.ascontiguousarray(chunk)[None])[0, 0])
        return out

    def push(self, tokens: Any) -> np.ndarray:
        self.stream.check_open()
        t = self._check(tokens)
        self.pending = t if self.pending is None else np.concatenate([self.pending, t], -1)
        parts = self._run(self.pending.shape[-1])
        audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        self.emitted += len(audio)
        return audio

    def flush(self, length: int | None = None) -> np.ndarray:
        self.stream.check_open()
        self.stream.finished = True
        if self.pending is None:   # nothing pushed: the stream is empty
            return np.zeros(0, dtype=np.float32)
        parts = self._run(self.pending.shape[-1])
        parts.append(self.stream.step(np.zeros((1, self.pending.shape[0], 0), dtype=np.int64))[0, 0])
        audio = np.concatenate(parts)
        if length is not None:
            audio = audio[: max(0, length - self.emitted)]
        self.emitted += len(audio)
        return audio
