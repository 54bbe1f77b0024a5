"""One streaming mechanism for every layer with memory.

A :class:`StreamingModule` computes the same function offline (whole signal at once) and in
streaming mode (the signal in chunks of any size). In streaming mode each module keeps an explicit
state object; :class:`StreamSession` owns the states of a whole module tree, so two sessions on one
model never share memory. Usage::

    session = StreamSession(model, batch_size=1)
    for chunk in chunks:
        y = session(chunk)          # outputs available so far
    y_tail = session.flush()        # end of stream: right-pad look-ahead layers with zeros

The concatenation of all outputs equals ``model(whole_signal)`` (tested to 1e-5).
Layers with look-ahead emit fewer samples than they receive until :meth:`StreamSession.flush`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn


class StreamingModule(nn.Module):
    """Base class of layers with memory across chunks.

    Subclasses implement :meth:`init_state` and read ``self.stream_state`` (``None`` offline).
    The state's ``final`` flag is set for the flush call that ends a stream.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stream_state: Any = None

    def init_state(self, batch_size: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def streaming(self) -> bool:
        return self.stream_state is not None


class State:
    """Mutable per-module streaming state: named tensors plus the end-of-stream flag."""

    def __init__(self, **tensors: Any) -> None:
        self.final = False
        self.__dict__.update(tensors)


class StreamSession:
    """Runs ``fn`` (default: ``module.forward``) chunk by chunk with private states.

    Args:
        module: the root of a tree that may contain :class:`StreamingModule` layers.
        batch_size: batch size of every chunk.
        fn: what to call per chunk; defaults to ``module``.
    """

    def __init__(self, module: nn.Module, batch_size: int = 1, fn: Callable | None = None) -> None:
        self.module = module
        self.fn = fn or module
        self.layers = [m for m in module.modules() if isinstance(m, StreamingModule)]
        self.states = [m.init_state(batch_size) for m in self.layers]
        self.finished = False

    def _run(self, *args: Any) -> Any:
        return run_with_states(self.layers, self.states, self.fn, *args)

    def __call__(self, *chunk: Any) -> Any:
        if self.finished:
            raise RuntimeError("stream already flushed; start a new session")
        return self._run(*chunk)

    def flush(self, *empty_chunk: Any) -> Any:
        """End the stream: every layer emits what it held back for look-ahead."""
        if self.finished:
            raise RuntimeError("stream already flushed; start a new session")
        for s in self.states:
            s.final = True
        self.finished = True
        return self._run(*empty_chunk)


def run_with_states(layers: list, states: list, fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` with ``states[i]`` as ``layers[i]``'s stream state (changed in place), the
    layers' own states restored afterwards."""
    # object.__setattr__ skips nn.Module's slow attribute bookkeeping (this runs every chunk).
    saved = [m.stream_state for m in layers]
    for m, s in zip(layers, states):
        object.__setattr__(m, "stream_state", s)
    try:
        return fn(*args)
    finally:
        for m, s in zip(layers, saved):
            object.__setattr__(m, "stream_state", s)


class FrameDelay(StreamingModule):
    """Identity offline; streaming holds back the last ``frames`` frames of ``[B, ..., F]`` until
    more arrive or the flush, to keep a side output aligned with a look-ahead path beside it."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.frames = frames

    def init_state(self, batch_size: int) -> State:
        return State(pending=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self.stream_state
        if state is None or not self.frames:
            return x
        buf = x if state.pending is None else torch.cat([state.pending, x], -1)
        n = buf.shape[-1] if state.final else max(buf.shape[-1] - self.frames, 0)
        out, state.pending = buf[..., :n], buf[..., n:]
        return out


def causal_frames(state: State | None, wav: torch.Tensor, span: int, hop: int) -> torch.Tensor:
    """Waveform ``[B, 1, T]`` -> frames ``[B, n, span]``: frame ``f`` is the ``span`` samples that
    end at ``(f + 1) * hop`` (zeros before the start), so a frame needs nothing beyond its own hop.

    Offline (``state`` None) ``n = T // hop``. Streaming, ``state.buffer`` ``[B, 1, span - hop]``
    keeps the samples that later frames still need, and only complete frames come out."""
    buf = F.pad(wav, (span - hop, 0)) if state is None else time_cat(state.buffer.to(wav), wav)
    n = max((buf.shape[-1] - span) // hop + 1, 0)
    if state is not None:
        state.buffer = buf[..., n * hop:]
    if n == 0:
        return buf.new_zeros(buf.shape[0], 0, span)
    if n == 1:   # (the same view as unfold's; an exported graph slices instead of gathering)
        return buf[:, :, :span]
    return buf[:, 0, : (n - 1) * hop + span].unfold(-1, span, hop)


def time_cat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Concatenate ``[B, C, T]`` tensors along time (skips empty ones, cheap for the common case)."""
    if a.shape[-1] == 0:
        return b
    if b.shape[-1] == 0:
        return a
    return torch.cat([a, b], dim=-1)


def lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]``: the rows of ``table`` at integer ``index`` (any shape), ``[*index.shape,
    *table.shape[1:]]``. The same values as indexing; an ONNX export gets one Gather (indexing
    exports as a GatherND between transposes or reshapes)."""
    if table.dim() == 1:
        return F.embedding(index, table[:, None])[..., 0]
    return F.embedding(index, table.flatten(1)).reshape(*index.shape, *table.shape[1:])
