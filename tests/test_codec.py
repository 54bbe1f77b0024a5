"""The Codec facade: shapes, bitrates, save/load, model identity, bad input."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import lrac
from lrac.codec import MODEL_VERSION, Codec


@pytest.fixture(scope="module")
def codec():
    return Codec("baseline-t1")


def test_properties(codec):
    assert codec.sample_rate == 24000 and codec.hop_length == 240 and codec.frame_rate == 100
    assert codec.bitrates_bps == [1000, 6000]
    assert codec.stages_for_bitrate(1000) == 1 and codec.stages_for_bitrate(6000) == 6


def test_unsupported_bitrate_lists_valid_ones(codec):
    with pytest.raises(ValueError, match="supports: 1000, 6000"):
        codec.encode(np.zeros(2400, dtype=np.float32), bitrate_bps=3000)


@pytest.mark.parametrize("shape", [(4801,), (1, 4801), (2, 1, 4801)])
def test_input_shapes_and_cropping(codec, shape):
    x = torch.randn(*shape) * 0.2
    tokens = codec.encode(x, 6000)
    batch = shape[0] if len(shape) == 3 else 1
    assert tokens.shape == (batch, 6, 21) and tokens.dtype == torch.int64
    assert codec.decode(tokens).shape == (batch, 1, 21 * 240)     # whole frames
    y = codec.decode(tokens, length=4801)                          # the input's length, explicitly
    assert y.shape == (batch, 1, 4801) and torch.equal(y, codec.decode(tokens)[..., :4801])
    assert not hasattr(tokens, "num_samples")                      # nothing rides on the tensor
    with pytest.raises(ValueError, match="length must be 0..5040"):
        codec.decode(tokens, length=5041)


def test_numpy_and_torch_agree(codec):
    x = np.random.default_rng(0).standard_normal(2400).astype(np.float32) * 0.2
    assert torch.equal(codec.encode(x, 1000), codec.encode(torch.from_numpy(x), 1000))


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(0), "empty"),
    (torch.full((480,), float("nan")), "NaN"),
    (torch.zeros(2, 480), "mono"),
    (torch.zeros(1, 2, 480), r"\[B, 1, T\]"),
])
def test_bad_audio(codec, bad, message):
    with pytest.raises(ValueError, match=message):
        codec.encode(bad, 6000)


def test_bad_tokens(codec):
    with pytest.raises(ValueError, match="0..1023"):
        codec.decode(torch.full((1, 1, 3), 1024))
    with pytest.raises(ValueError, match="unsupported bitrate"):
        codec.decode(torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        codec.decode(torch.zeros(1, 1, 3))


def test_silence_encodes_to_finite_audio(codec):
    y = codec.decode(codec.encode(np.zeros(4800, dtype=np.float32), 6000))
    assert torch.isfinite(y).all()


def test_save_load_round_trip(tmp_path):
    codec = Codec("baseline-t2")
    codec.generator.train()
    codec.generator(torch.randn(2, 1, 4800), 6)  # move codebooks away from init
    codec.generator.eval()
    x = torch.randn(4800) * 0.3
    # the codec as Codec.load prepares it: weight norm folded, then a float64 send side (folding
    # after the cast would round the weights differently, which can flip a token at a near-tie)
    reference = Codec(codec.config)
    reference.generator.load_state_dict(codec.generator.state_dict())
    tokens = reference.fold_weight_norm().set_exact(True).encode(x, 6000)
    path = tmp_path / "m.pt"
    codec.save(path)
    loaded = Codec.load(path)
    assert loaded.config.model_dict() == codec.config.model_dict()
    assert loaded.model_id == codec.model_id and len(loaded.model_id) == 8
    assert loaded.weight_norm_folded
    assert torch.equal(loaded.encode(x, 6000), tokens)
    assert torch.allclose(loaded.decode(tokens), codec.decode(tokens), atol=1e-5)
    # a folded model saves and loads again
    loaded.save(tmp_path / "folded.pt")
    again = Codec.load(tmp_path / "folded.pt", inference=False).set_exact(True)
    assert torch.equal(again.encode(x, 6000), tokens)
    trainable = Codec.load(path, inference=False)
    assert not trainable.weight_norm_folded


def test_a_loaded_codec_runs_the_training_forward_as_it_codes():
    """Codec.load gives a float64 send side and a float32 decoder; the training forward (what
    validation and offline checks call) runs on it and gives the audio of encode then decode."""
    from lrac.audio import load_audio

    codec = Codec.pretrained("t1")
    assert codec.encode_dtype == torch.float64 and codec.decode_dtype == torch.float32
    x = torch.from_numpy(load_audio(Path(__file__).resolve().parents[1] / "examples" / "p238_165.flac",
                                    24000)[0][:9600])
    for bitrate in codec.bitrates_bps:
        with torch.no_grad():
            out = codec.generator(x[None, None], codec.stages_for_bitrate(bitrate))[0]
        assert out.dtype == torch.float32
        assert torch.allclose(out, codec.decode(codec.encode(x, bitrate)), atol=1e-6)


def test_half_precision_file_is_smaller_and_loads_as_saved(tmp_path):
    codec = Codec("t1")
    codec.save(tmp_path / "full.pt")
    codec.save(tmp_path / "half.pt", half=True)  # rounds the codec's own weights too
    assert (tmp_path / "half.pt").stat().st_size < 0.6 * (tmp_path / "full.pt").stat().st_size
    loaded = Codec.load(tmp_path / "half.pt", exact=False)
    assert loaded.model_id == codec.model_id
    assert next(loaded.decoder.parameters()).dtype == torch.float32
    x = torch.randn(4800) * 0.3
    tokens = codec.encode(x, 6000)
    assert torch.equal(loaded.encode(x, 6000), tokens)
    assert torch.allclose(loaded.decode(tokens), codec.decode(tokens), atol=1e-5)


def test_different_weights_different_identity():
    assert Codec("baseline-t1").model_id != Codec("baseline-t1").model_id


def test_a_model_file_stores_the_model_config_and_provenance(tmp_path):
    codec = Codec("t1")
    codec.note, codec.made = "a test model", "untrained"
    codec.save(tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=False)
    assert set(state["config"]) == {"name", "model", "quantizer"} and state["version"] == MODEL_VERSION == 4
    loaded = Codec.load(tmp_path / "m.pt")
    assert (loaded.note, loaded.made, loaded.model_id) == ("a test model", "untrained", codec.model_id)
    assert loaded.config.model == codec.config.model and loaded.config.name == "t1"
    # the identity is the model's: training settings do not change it
    other = Codec(codec.config.override(["train.lr=1e-5"]))
    other.generator.load_state_dict(codec.generator.state_dict())
    assert other.compute_model_id() == codec.model_id


def test_a_model_files_identity_follows_from_its_content(tmp_path):
    """The id in a file is the hash of the config and weights it stores, for files written today
    (full or half precision) and for the shipped ones, which store lrac 0.1.0's whole config."""
    from lrac.codec import PRETRAINED_DIR, model_identity

    codec = Codec("t1")
    codec.save(tmp_path / "full.pt")
    codec.save(tmp_path / "half.pt", half=True)
    files = [tmp_path / "full.pt", tmp_path / "half.pt", *sorted(PRETRAINED_DIR.glob("*.pt"))]
    for path in files:
        state = torch.load(path, weights_only=False)
        assert model_identity(state["config"], state["generator"]).hex() == state["model_id"], path
    state = torch.load(tmp_path / "full.pt", weights_only=False)
    state["generator"]["decoder.net.backbone.out.bias"][0] += 1e-3       # other weights, other id
    assert model_identity(state["config"], state["generator"]).hex() != state["model_id"]


def test_presets_t1_and_t2_are_the_shipped_models():
    if not {"t1", "t2"} <= set(Codec.pretrained_names()):
        pytest.skip("no pretrained t1/t2 in lrac/pretrained")
    for name, track in (("t1", 1), ("t2", 2)):
        shipped, preset = Codec.pretrained(name), lrac.load_config(name)
        assert shipped.config.model == preset.model and shipped.config.quantizer == preset.quantizer
        assert shipped.config.name == name and shipped.config.model.track == track


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        Codec.load(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a readable lrac model"):
        Codec.load(junk)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an lrac model"):
        Codec.load(tmp_path / "other.pt")
    Codec("t1").save(tmp_path / "t1.pt")
    state = torch.load(tmp_path / "t1.pt", weights_only=False)
    # pitch-path weights under a config without the pitch path (nor the low band, which needs it)
    state["config"]["model"]["frame"]["pitch"] = None
    state["config"]["model"]["frame"]["lowband"] = None
    torch.save(state, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="weights do not fit"):
        Codec.load(tmp_path / "mismatch.pt")


def test_public_api():
    for name in ["Codec", "Encoder", "Decoder", "ResidualVQ", "load_config", "Config"]:
        assert hasattr(lrac, name)


def test_saved_files_have_ordinary_permissions(tmp_path):
    """Model files are readable by others as any file the user writes (not owner-only temp files)."""
    import os
    import stat

    Codec("baseline-t1").save(tmp_path / "m.pt")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "m.pt").stat().st_mode) == 0o666 & ~umask


def test_damaged_or_changed_model_files_are_refused(tmp_path):
    """One NaN or inf in any weight, or weights changed after saving (the stored identity no longer
    theirs), is a one-line ValueError at load, not garbage audio or a borrowed identity."""
    codec = Codec("baseline-t1")
    codec.save(tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=False)
    for bad in (float("nan"), float("inf")):
        damaged = {**state, "generator": dict(state["generator"])}
        key = sorted(k for k, v in damaged["generator"].items() if v.is_floating_point())[-1]
        damaged["generator"][key] = damaged["generator"][key].clone().view(-1).index_fill(0, torch.tensor([3]), bad) \
            .view_as(damaged["generator"][key])
        torch.save(damaged, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match=f"weight {key} holds 1 NaN or infinite value") as info:
            Codec.load(tmp_path / "bad.pt")
        assert "\n" not in str(info.value)
    changed = {**state, "generator": dict(state["generator"])}
    key = next(k for k, v in changed["generator"].items() if v.is_floating_point())
    changed["generator"][key] = changed["generator"][key] * 1.001
    torch.save(changed, tmp_path / "changed.pt")
    with pytest.raises(ValueError, match="not the ones its model id .* was computed from"):
        Codec.load(tmp_path / "changed.pt")
    del changed["model_id"]   # no stored identity: the weights' own is computed
    torch.save(changed, tmp_path / "anonymous.pt")
    assert Codec.load(tmp_path / "anonymous.pt").model_id not in (codec.model_id, None)


def test_int16_is_scaled_and_other_integers_refused(codec):
    x = (np.random.default_rng(0).standard_normal(4800) * 6000).astype(np.int16)
    assert torch.equal(codec.encode(x, 1000), codec.encode(x.astype(np.float32) / 32768, 1000))
    assert torch.equal(codec.encode(torch.from_numpy(x), 1000), codec.encode(x.astype(np.float32) / 32768, 1000))
    for dtype in (np.int32, np.int64, np.uint8, bool):
        with pytest.raises(TypeError, match="float samples in \\[-1, 1\\] or int16 PCM"):
            codec.encode(np.zeros(480, dtype=dtype), 1000)


def test_float_audio_above_full_scale_is_clipped_with_one_warning(codec):
    x = np.random.default_rng(0).standard_normal(9600).astype(np.float32)
    x[100] = 1e37
    with pytest.warns(UserWarning, match="samples above full scale \\(up to 1e\\+37\\); clipped to \\[-1, 1\\]"):
        tokens = codec.encode(x, 6000)
    assert torch.equal(tokens, codec.encode(np.clip(x, -1, 1), 6000))
    stream = codec.stream_encoder(6000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parts = [stream.push(x[i:i + 960]) for i in range(0, len(x), 960)] + [stream.flush()]
    assert len(caught) == 1 and "audio stream: samples above full scale" in str(caught[0].message)
    assert torch.equal(torch.cat(parts, dim=-1), tokens)


def test_no_frames_is_a_value_error(codec):
    with pytest.raises(ValueError, match="tokens hold no frames"):
        codec.decode(torch.zeros(1, 1, 0, dtype=torch.long))
