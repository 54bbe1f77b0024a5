"""Research probe (not part of the package): the pitch path with the tracker's exact per-frame pitch
instead of the 6-bit code held for 2 frames, an upper bound on what a finer pitch code can give
(the probe behind the pitch refinement at 6 kbps, docs/frame_family.md). Patches PitchPacker/PitchUnpacker so that the side "symbols" are the
pitch in Hz (0 = unvoiced); they pass the generator's training forward, not real tokens.

    python benchmarks/oracle_pitch.py --track 1 --config t1 --set model.frame.pitch.fine_bits=0 ...

takes every argument of lrac-train (the run that measured it: `git show c52c210:checkpoints/README.md`,
the exp/t1-anneal command with --out exp/t1-oracle and --set train.max_minutes=85)."""
import torch
from lrac.models import pitch as P


def packer_forward(self, f0_hz, voiced):
    """``[B, 1, F]``: one row, as the code alone (the refinement's row makes no sense here)."""
    return torch.where(voiced, f0_hz.double(), torch.zeros_like(f0_hz, dtype=torch.float64))[:, None]


def unpacker_forward(self, symbols):
    symbols = symbols[:, 0]
    voiced = symbols > 0
    f0 = torch.where(voiced, symbols.double(), torch.nan)
    f0 = torch.cat([torch.full_like(f0[:, :1], P.START_F0_HZ), f0], -1)
    idx = torch.where(~torch.isnan(f0), torch.arange(f0.shape[-1], device=f0.device), 0).cummax(-1).values
    return f0.gather(-1, idx)[:, 1:].float(), voiced.float()


P.PitchPacker.forward = packer_forward
P.PitchUnpacker.forward = unpacker_forward

if __name__ == "__main__":
    from lrac.cli.train import main
    main()
