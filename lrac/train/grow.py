"""Start a larger frame-family model from a trained smaller one that computes the same function.

Why. Track 2 allows 50 ms and about 2600 MFLOPS (600 on the receive side), and the shipped Track 2
model is the Track 1 architecture (30 ms, 672 MFLOPS): it leaves two frames of look-ahead and most
of its compute unused. Training a larger model from scratch throws away every hour the small one
trained; growing it keeps them. A ConvNeXt block is ``x + gamma * branch(x)``, so a new block with
``gamma = 0`` is the identity, and new hidden units whose output weights are zero add nothing.
The grown model codes exactly as the source did until training moves the new weights
(``gamma`` gets a gradient at once, the branch after it).

What may grow (``model.frame`` keys; everything else must be equal):

* ``encoder_layers`` / ``decoder_layers``: new blocks are the identity;
* ``encoder_lookahead_frames`` / ``decoder_lookahead_frames``: by at most the number of new blocks.
  The first blocks of a backbone are its look-ahead ones, so the new look-ahead blocks go in front
  and the other new blocks at the end; the trained blocks keep their padding, hence their function;
* ``encoder_mlp_ratio`` / ``decoder_mlp_ratio``: new hidden units get fresh input weights and zero
  output weights;
* ``lowband`` (from null): the model gains the low-band code (``lrac/models/lowband.py``, no
  weights), which takes the last token rows; the latent keeps the file's first stages. This one
  changes what the highest bitrate decodes, by design.

Usage: ``lrac-train --init-from SMALL.pt --set model.frame.encoder_layers=8
--set model.frame.encoder_lookahead_frames=2 ...`` (:meth:`lrac.train.trainer.Trainer.load_weights`
grows when the weights do not fit and the change is a growth).
"""

from __future__ import annotations

import dataclasses
import re

import torch
from torch import nn

from ..config import ModelConfig
from ..models.frame import mlp_hidden

_GROWABLE_KEYS = ("layers", "lookahead_frames", "mlp_ratio")   # of each side, model.frame.<side>_<key>
_GROWABLE = {f"{side}_{key}" for side in ("encoder", "decoder") for key in _GROWABLE_KEYS}
_STAGE_KEY = re.compile(r"^quantizer\.stages\.(?P<index>\d+)\.")
_BLOCK_KEY = re.compile(r"^(?P<side>encoder|decoder)\.net\.backbone\.blocks\.(?P<index>\d+)\.(?P<rest>.+)$")


def growth_plan(src: ModelConfig, dst: ModelConfig) -> dict[str, int]:
    """How ``dst``'s backbones extend ``src``'s: ``{"encoder": k, "decoder": k}``, the number of new
    blocks each puts in front (its new look-ahead blocks). Raises ``ValueError`` naming the key when
    ``dst`` is not a growth of ``src``."""
    if src.family != "frame" or dst.family != "frame":
        raise ValueError("only frame-family models grow (model.family: frame)")
    a, b = dataclasses.asdict(src), dataclasses.asdict(dst)
    fa, fb = a.pop("frame"), b.pop("frame")
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            raise ValueError(f"model.{key} differs ({a.get(key)} -> {b.get(key)}): only the frame "
                             "backbones' layers, look-ahead and MLP ratio can grow")
    for key in sorted(set(fa) | set(fb)):
        if key == "lowband" and fa.get(key) is None:
            continue
        if key not in _GROWABLE and fa.get(key) != fb.get(key):
            raise ValueError(f"model.frame.{key} differs ({fa.get(key)} -> {fb.get(key)}): only the "
                             "backbones' layers, look-ahead and MLP ratio can grow")
    front = {}
    for side in ("encoder", "decoder"):
        layers, lookahead, ratio = (f"{side}_layers", f"{side}_lookahead_frames", f"{side}_mlp_ratio")
        new_blocks = fb[layers] - fa[layers]
        extra_lookahead = fb[lookahead] - fa[lookahead]
        if new_blocks < 0 or fb[ratio] < fa[ratio]:
            raise ValueError(f"model.frame.{layers} and {ratio} can only grow")
        if not 0 <= extra_lookahead <= new_blocks:
            raise ValueError(f"model.frame.{lookahead} can only grow, by at most the number of new "
                             f"{side} blocks ({new_blocks})")
        front[side] = extra_lookahead
    return front


@torch.no_grad()
def grow_generator(generator: nn.Module, state: dict[str, torch.Tensor], src: ModelConfig,
                   dst: ModelConfig) -> list[str]:
    """Load ``state`` (a generator trained with ``src``) into ``generator`` (built with ``dst``, a
    growth of ``src``: :func:`growth_plan`), making new blocks and hidden units inert. Returns what
    grew, one line per backbone that changed."""
    front = growth_plan(src, dst)
    target = generator.state_dict()
    fs, fd = dataclasses.asdict(src.frame), dataclasses.asdict(dst.frame)
    dropped_stages = set()
    try:
        for key, value in state.items():
            stage = _STAGE_KEY.match(key)
            if stage is not None and key not in target:   # a latent stage the low-band code replaced
                dropped_stages.add(int(stage["index"]))
                continue
            match = _BLOCK_KEY.match(key)
            if match is None:
                target[key].copy_(value)   # same shapes: growth_plan allows nothing else to change
                continue
            side, rest = match["side"], match["rest"]
            dest = target[f"{side}.net.backbone.blocks.{int(match['index']) + front[side]}.{rest}"]
            if rest in ("pw1.weight", "pw1.bias"):        # [hidden, dim] / [hidden]: old units first
                dest[: value.shape[0]].copy_(value)
            elif rest == "pw2.weight":                    # [dim, hidden]: new units' outputs start at 0
                dest.zero_()
                dest[:, : value.shape[1]].copy_(value)
            else:
                dest.copy_(value)
    except (KeyError, RuntimeError) as exc:
        raise ValueError(f"the weights do not match the config they came with ({exc})") from None
    report = []
    for side in ("encoder", "decoder"):
        old, new = fs[f"{side}_layers"], fd[f"{side}_layers"]
        kept = range(front[side], front[side] + old)
        for i in range(new):
            if i not in kept:
                target[f"{side}.net.backbone.blocks.{i}.gamma"].zero_()
        if any(fs[f"{side}_{k}"] != fd[f"{side}_{k}"] for k in _GROWABLE_KEYS):
            hidden = [mlp_hidden(f[f"{side}_dim"], f[f"{side}_mlp_ratio"]) for f in (fs, fd)]
            report.append(f"{side}: {old} -> {new} blocks ({front[side]} new look-ahead block(s) in front, "
                          f"{new - old - front[side]} at the end), hidden {hidden[0]} -> {hidden[1]}; "
                          "new weights start inert")
    if dropped_stages:
        report.append(f"quantizer: latent stages {sorted(dropped_stages)} dropped (their tokens carry the "
                      "low-band code)")
    generator.load_state_dict(target)
    return report
