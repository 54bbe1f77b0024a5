"""Compute, parameters, latency and bitrate of a codec, read from the model itself (spec §1, §7.2.9).

Convention of the challenge: FLOPs = 2 x MACs of convolutions, transposed convolutions and linear
layers, per second of audio; activations and bias additions are not counted. We count by running
one second of audio through each side with forward hooks, so any architecture is measured the same
way. Layers outside those three kinds declare their own cost with a method
``extra_macs(inputs, output) -> int`` (e.g. an STFT). The RVQ is counted analytically and reported
separately and checked against the limits both ways (``pass``: challenge convention, networks only;
``pass_with_rvq``: with the RVQ), because the official rules on counting it were not found.

Latency = buffering (one hop) + algorithmic look-ahead. Every layer that looks ahead declares
``lookahead_samples`` (at its input rate) or ``lookahead_seconds``; the total is their sum along the
chain, measured on the same forward pass.
"""

from __future__ import annotations

import torch
from torch import nn

# Track limits (spec §1): total MFLOPS, receive-side MFLOPS, latency in ms.
TRACK_LIMITS = {1: {"total_mflops": 700.0, "receive_mflops": 300.0, "latency_ms": 30.0},
                2: {"total_mflops": 2600.0, "receive_mflops": 600.0, "latency_ms": 50.0}}


def _layer_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    x = inputs[0]
    if hasattr(module, "extra_macs"):
        return int(module.extra_macs(inputs, output))
    if isinstance(module, nn.Conv1d):
        return output.numel() // output.shape[0] * (module.in_channels // module.groups) * module.kernel_size[0]
    if isinstance(module, nn.ConvTranspose1d):
        return x.numel() // x.shape[0] * (module.out_channels // module.groups) * module.kernel_size[0]
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        return output.numel() // output.shape[0] * (module.in_channels // module.groups) * k
    if isinstance(module, nn.Linear):
        return output.numel() // output.shape[0] * module.in_features
    return 0


def measure(module: nn.Module, inputs: tuple, seconds: float) -> dict:
    """Run ``module(*inputs)`` (batch 1, ``seconds`` of signal) and count MACs/s and look-ahead seconds."""
    stats = {"macs": 0, "lookahead_s": 0.0}

    def hook(mod: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        stats["macs"] += _layer_macs(mod, inputs, output)
        if getattr(mod, "lookahead_seconds", 0):
            stats["lookahead_s"] += float(mod.lookahead_seconds)
        elif getattr(mod, "lookahead_samples", 0):
            rate = inputs[0].shape[-1] / seconds
            stats["lookahead_s"] += mod.lookahead_samples / rate

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d, nn.Conv2d, nn.Linear))
               or hasattr(m, "extra_macs") or hasattr(m, "lookahead_samples")
               or hasattr(m, "lookahead_seconds")]
    try:
        with torch.inference_mode():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return {"macs_per_s": stats["macs"] / seconds, "lookahead_s": stats["lookahead_s"]}


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def complexity_report(codec) -> dict:
    """Compute/latency/bitrate report of a :class:`~lrac.codec.Codec` (all figures per second of audio).

    Keys: ``encoder_mflops``, ``decoder_mflops`` (networks, challenge convention),
    ``quantizer_encode_mflops``/``quantizer_decode_mflops`` (RVQ at the highest bitrate),
    ``total_mflops``/``receive_mflops`` (networks, checked in ``pass``),
    ``total_with_rvq_mflops``/``receive_with_rvq_mflops`` (checked in ``pass_with_rvq``), ``params``, ``latency_ms`` and its parts,
    ``bitrates_bps``, ``track``, ``limits`` (the model's track's) and ``pass`` (per limit)."""
    sr, hop = codec.sample_rate, codec.hop_length
    seconds = 1.0
    frames = int(round(sr * seconds / hop))
    device = codec.device
    enc = measure(codec.encoder, (torch.zeros(1, 1, frames * hop, device=device),), seconds)
    latent = torch.zeros(1, codec.quantizer.latent_dim, frames, device=device)
    # the symbols beside the latent (the pitch) that the tokens of the highest bitrate carry
    symbols = codec.layout.unpack(torch.zeros(1, codec.n_stages, frames, dtype=torch.long, device=device))
    symbols.pop("latent")
    dec = measure(codec.decoder, (latent, symbols), seconds)

    q = codec.quantizer
    n_q = max(codec.stages_for_bitrate(b) for b in codec.bitrates_bps)
    dim = q.latent_dim
    # per stage: in-projection, search, out-projection (encode); out-projection (decode)
    q_enc_macs = codec.frame_rate * sum(2 * dim * s.project_in.out_features + s.codebook.search_macs()
                                        for s in q.stages[:n_q])
    q_dec_macs = codec.frame_rate * sum(dim * s.project_in.out_features for s in q.stages[:n_q])

    mf = lambda macs: 2 * macs / 1e6  # noqa: E731  (FLOPs = 2 x MACs)
    report = {
        "encoder_mflops": mf(enc["macs_per_s"]),
        "decoder_mflops": mf(dec["macs_per_s"]),
        "quantizer_encode_mflops": mf(q_enc_macs),
        "quantizer_decode_mflops": mf(q_dec_macs),
    }
    # Challenge convention (it reproduces the baseline's published 378 MFLOPS): networks only.
    report["total_mflops"] = report["encoder_mflops"] + report["decoder_mflops"]
    report["receive_mflops"] = report["decoder_mflops"]
    report["total_with_rvq_mflops"] = sum(report[k] for k in ("total_mflops", "quantizer_encode_mflops",
                                                               "quantizer_decode_mflops"))
    report["receive_with_rvq_mflops"] = report["decoder_mflops"] + report["quantizer_decode_mflops"]
    report.update({
        "params": _params(codec.generator),
        "encoder_params": _params(codec.encoder),
        "quantizer_params": _params(q),
        "decoder_params": _params(codec.decoder),
        "buffering_ms": 1000.0 * hop / sr,
        "encoder_lookahead_ms": 1000.0 * enc["lookahead_s"],
        "decoder_lookahead_ms": 1000.0 * dec["lookahead_s"],
    })
    report["latency_ms"] = report["buffering_ms"] + report["encoder_lookahead_ms"] + \
        report["decoder_lookahead_ms"]
    report["bitrates_bps"] = codec.bitrates_bps
    report["frame_rate"] = codec.frame_rate
    track = codec.config.model.track
    if track not in TRACK_LIMITS:
        raise ValueError(f"model.track must be one of {sorted(TRACK_LIMITS)}, got {track}")
    limits = TRACK_LIMITS[track]
    report["track"] = track
    report["limits"] = limits
    report["pass"] = {key: report[key] <= limit + 1e-9 for key, limit in limits.items()}
    report["pass_with_rvq"] = {
        "total_mflops": report["total_with_rvq_mflops"] <= limits["total_mflops"] + 1e-9,
        "receive_mflops": report["receive_with_rvq_mflops"] <= limits["receive_mflops"] + 1e-9}
    return report


def format_complexity(report: dict) -> str:
    """A plain-text table of :func:`complexity_report`."""
    lim, ok, ok_rvq = report["limits"], report["pass"], report["pass_with_rvq"]
    mark = lambda key, table=ok: "pass" if table[key] else "FAIL"  # noqa: E731
    rows = [
        ("encoder (send side)", f"{report['encoder_mflops']:.1f} MFLOPS", ""),
        ("decoder (receive side)", f"{report['decoder_mflops']:.1f} MFLOPS", ""),
        ("RVQ encode / decode", f"{report['quantizer_encode_mflops']:.1f} / "
                                f"{report['quantizer_decode_mflops']:.1f} MFLOPS", ""),
        ("total", f"{report['total_mflops']:.1f} MFLOPS",
         f"<= {lim['total_mflops']:.0f}: {mark('total_mflops')}"),
        ("receive side", f"{report['receive_mflops']:.1f} MFLOPS",
         f"<= {lim['receive_mflops']:.0f}: {mark('receive_mflops')}"),
        ("total incl. RVQ", f"{report['total_with_rvq_mflops']:.1f} MFLOPS",
         f"<= {lim['total_mflops']:.0f}: {mark('total_mflops', ok_rvq)}"),
        ("receive incl. RVQ", f"{report['receive_with_rvq_mflops']:.1f} MFLOPS",
         f"<= {lim['receive_mflops']:.0f}: {mark('receive_mflops', ok_rvq)}"),
        ("buffering", f"{report['buffering_ms']:.1f} ms", ""),
        ("encoder look-ahead", f"{report['encoder_lookahead_ms']:.1f} ms", ""),
        ("decoder look-ahead", f"{report['decoder_lookahead_ms']:.1f} ms", ""),
        ("latency", f"{report['latency_ms']:.1f} ms",
         f"<= {lim['latency_ms']:.0f}: {mark('latency_ms')}"),
        ("parameters", f"{report['params']:,} (enc {report['encoder_params']:,}, "
                       f"RVQ {report['quantizer_params']:,}, dec {report['decoder_params']:,})", ""),
        ("bitrates", ", ".join(f"{b} bit/s" for b in report["bitrates_bps"])
         + f" at {report['frame_rate']:g} frames/s", ""),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"Track {report['track']} limits (FLOPs = 2 x MACs per second of audio)"]
    lines += [f"  {name:<{width}}  {value:<40} {check}".rstrip() for name, value, check in rows]
    return "\n".join(lines)
