import numpy as np
import pytest
from transformers import WhisperFeatureExtractor

from conftest import load
from vidnotes.features import N_FRAMES, log_mel, log_mel_batch


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_matches_transformers_on_real_speech(test_split, n_mels):
    fe = WhisperFeatureExtractor(feature_size=n_mels)
    for rec in test_split[:3]:
        audio = load(rec)
        ref = fe(audio, sampling_rate=16000, return_tensors="np").input_features[0]
        ours = log_mel(audio, n_mels=n_mels)
        assert ours.shape == ref.shape == (n_mels, N_FRAMES)
        np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_log_mel_matches_transformers_on_edge_lengths():
    fe = WhisperFeatureExtractor(feature_size=80)
    rng = np.random.default_rng(1)
    for n in (1, 401, 16000 * 30):
        audio = (rng.standard_normal(n) * 0.2).astype(np.float32)
        ref = fe(audio, sampling_rate=16000, return_tensors="np").input_features[0]
        np.testing.assert_allclose(log_mel(audio), ref, atol=1e-4)


def test_log_mel_rejects_overlong_window_and_stereo():
    with pytest.raises(ValueError, match="at most 30 s"):
        log_mel(np.zeros(16000 * 31, dtype=np.float32))
    with pytest.raises(ValueError, match="mono"):
        log_mel(np.zeros((2, 100), dtype=np.float32))


def test_batch_is_the_stack_of_singles():
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal(n).astype(np.float32) for n in (8000, 24000))
    batch = log_mel_batch([a, b])
    np.testing.assert_array_equal(batch[1], log_mel(b))
