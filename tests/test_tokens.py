"""The token layout (lrac/tokens.py): sub-codes share each token's bits, pack and unpack are exact
inverses at every bitrate, and a layout whose bits do not add up is refused."""

import pytest
import torch
from conftest import PLAIN_HEAD

from lrac.config import load_config
from lrac.tokens import LATENT, SubCode, TokenLayout, token_layout


def _random_symbols(layout: TokenLayout, frames: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {name: torch.stack([torch.randint(0, 1 << b, (2, frames), generator=gen) for b in sub.bits], 1)
            for name, sub in layout.subcodes.items()}


def test_a_model_declares_its_sub_codes():
    t1 = token_layout(load_config("t1").model, load_config("t1").quantizer)
    assert t1.bits(LATENT) == (7, 6, 10, 10) and t1.bits("pitch") == (3, 4) and t1.bits("lowband") == (10, 10)
    plain = token_layout(load_config("t1", PLAIN_HEAD).model, load_config("t1").quantizer)
    assert list(plain.subcodes) == [LATENT] and plain.bits(LATENT) == (10,) * 6
    baseline = load_config("baseline-t1")
    assert list(token_layout(baseline.model, baseline.quantizer).subcodes) == [LATENT]


def test_pack_and_unpack_are_inverses_at_every_bitrate():
    """With a third sub-code on the last rows, as a low-band waveform code would have at 6 kbps."""
    layout = TokenLayout(10, 6, [SubCode(LATENT, (7, 6, 10)), SubCode("pitch", (3, 4)),
                                 SubCode("lowband", (10, 10, 10), first_row=3)])
    gen = torch.Generator().manual_seed(0)
    symbols = _random_symbols(layout, 9, gen)
    for n_q in range(1, 7):
        tokens = layout.pack(symbols, n_q)
        assert tokens.shape == (2, n_q, 9) and int(tokens.max()) < 1024
        back = layout.unpack(tokens)
        assert back.keys() == layout.carried(symbols, n_q).keys()
        for name, rows in back.items():
            assert torch.equal(rows, symbols[name][:, :layout.rows_carried(name, n_q)]), (name, n_q)
        assert ("lowband" in back) == (n_q > 3) and layout.rows_carried(LATENT, n_q) == min(n_q, 3)
    # the latent in the high bits, the pitch in the low bits of rows 0 and 1
    tokens = layout.pack(symbols, 2)
    assert torch.equal(tokens[:, 0], symbols[LATENT][:, 0] * 8 + symbols["pitch"][:, 0])
    assert torch.equal(tokens[:, 1], symbols[LATENT][:, 1] * 16 + symbols["pitch"][:, 1])


@pytest.mark.parametrize("subcodes, match", [
    ([SubCode(LATENT, (7, 10))], r"take \[7, 10\] bits"),
    ([SubCode(LATENT, (10, 10)), SubCode("pitch", (3,), first_row=2)], "do not fit 2 tokens"),
    ([SubCode("pitch", (10, 10))], "one 'latent' sub-code"),
])
def test_a_layout_that_does_not_add_up_is_refused(subcodes, match):
    with pytest.raises(ValueError, match=match):
        TokenLayout(10, 2, subcodes)
