"""sttrl's data layer: an offline Swahili corpus synthesized by espeak-ng, or real hub speech; deterministic splits.

The episode gets :class:`SpeechData` (train + validation). Only the judge calls :func:`load_hidden_split`.
"""

from sttrl.data.audio import SAMPLE_RATE, load_audio
from sttrl.data.corpus import DOMAINS, EPISODE_DOMAINS, generate_sentences, vocabulary_overlap
from sttrl.data.dataset import SpeechData, build_general_data, build_speech_data, load_hidden_split
from sttrl.data.splits import check_disjoint, utterance_id
from sttrl.data.synth import validate_voices
from sttrl.data.types import Utterance

__all__ = [
    "DOMAINS",
    "EPISODE_DOMAINS",
    "SAMPLE_RATE",
    "SpeechData",
    "Utterance",
    "build_general_data",
    "build_speech_data",
    "check_disjoint",
    "generate_sentences",
    "load_audio",
    "load_hidden_split",
    "utterance_id",
    "validate_voices",
    "vocabulary_overlap",
]
