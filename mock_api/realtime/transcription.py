"""What the input-transcription (ASR) model makes of a user turn.

What the caller said comes from the behaviour script (``Turn.hears``, in ``Turn.language``,
ISO-639-1, default ``"en"``) or, when the script does not say, from the audio itself
(:mod:`mock_api.recognisers`: a known clip's sidecar text and language, or a plugged-in
recogniser). Audio nobody recognised is transcribed verbatim as its placeholder
(:func:`verbatim`, e.g. ``[unrecognised audio, 2.4 s]``): no language or keyword step touches it.
The session's ``audio.input.transcription`` object decides what comes out on
``conversation.item.input_audio_transcription.*``:

``language``
    Unset (``null``, auto-detect): the scripted text comes through. Set and equal to the
    spoken language (compared on the primary subtag, case-insensitively, so ``"es-MX"``
    matches ``"es"``): the scripted text comes through. Set to a *different* language: the
    ASR is forced to decode the audio as that language, which on the real service yields a
    phonetic mis-hearing or an unwanted translation. The mock renders that as
    :func:`misheard`: deterministic, visibly wrong, same word count — lowercased, sentence
    punctuation dropped, and the vowels of every word rotated ``a→e→i→o→u→a`` (digits and
    other characters stay), e.g. ``"I need to reset my password."`` becomes
    ``"o niid tu risit my pesswurd"``.
``languages`` (``gpt-transcribe``, ``gpt-live-transcribe`` only; ignored for other models)
    Candidate languages. When the list is non-empty and the spoken language is not in it,
    the turn is mis-heard as above (forced to the first candidate). ``language``, when set,
    wins over ``languages``.
``prompt`` / ``keywords`` (``keywords``: gpt-transcribe models only)
    Keyword prompting: every word of the prompt (and each keyword phrase) replaces a
    case-insensitive whole-word match in the transcript, so the prompt's spellings win
    (``"alex"`` → ``"Alex"`` with prompt ``"Alex"``). Applied after the language step.

The ``languages`` field of ``…transcription.completed`` (``[{"code": …}]``, the SDK's
``TranscriptionLanguage``) is filled for ``gpt-transcribe`` and ``gpt-live-transcribe`` only:
the spoken language when it was recognised, the forced language when the turn was
mis-heard. Other models omit the field, as the SDK docstring says.

The realtime *model* itself understands every language: out-of-band transcription
responses and the reply the script chooses are not affected by this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .. import models
from ..recognisers import unrecognised_text

LANGUAGE_REPORTING_MODELS = ("gpt-transcribe", "gpt-live-transcribe")
"""Models whose ``…completed`` events carry ``languages`` (SDK docstring: "Returned by gpt-transcribe")."""

_VOWEL_SHIFT = str.maketrans("aeiouáéíóú", "eiouaeioua")
_SENTENCE_PUNCT = re.compile(r"[.,!?;:¡¿\"()…]")


@dataclass(frozen=True)
class Transcript:
    text: str
    languages: list[dict[str, str]] | None  # the ``languages`` field of …completed, or None to omit it
    recognised: bool  # False when the turn was mis-heard (wrong forced language)


def primary(code: Any) -> str | None:
    """``"es-MX"`` → ``"es"``; anything that is not a non-empty string → None."""
    if not isinstance(code, str) or not code.strip():
        return None
    return code.strip().lower().replace("_", "-").split("-")[0]


def misheard(text: str) -> str:
    """The deterministic rendering of speech decoded in the wrong language (module docstring)."""
    words = _SENTENCE_PUNCT.sub(" ", text).lower().translate(_VOWEL_SHIFT).split()
    return " ".join(words)


def apply_keywords(text: str, words: list[str]) -> str:
    """Prefer the given spellings: whole-word, case-insensitive replacement."""
    for word in words:
        if word.strip():
            text = re.sub(rf"(?<![\w'-]){re.escape(word.strip())}(?![\w'-])", word.strip(), text,
                          flags=re.IGNORECASE)
    return text


def prompt_words(prompt: Any) -> list[str]:
    if not isinstance(prompt, str) or not prompt.strip():
        return []
    return re.findall(r"[\w'-]+", prompt)


def verbatim(text: str, config: dict[str, Any]) -> Transcript:
    """The transcript of audio nobody recognised: its placeholder as it is, no language reported."""
    return Transcript(text, None, True)


def transcribe(text: str | None, spoken: str | None, config: dict[str, Any]) -> Transcript:
    """Transcript of a turn whose words are ``text``, spoken in ``spoken``, under ``config``.

    ``text=None`` (nobody knows what was said) gives the unrecognised placeholder, never words.
    """
    if text is None:
        return verbatim(unrecognised_text(None), config)
    model = str(config.get("model") or models.DEFAULT_TRANSCRIPTION)
    spoken_code = primary(spoken) or "en"
    forced = primary(config.get("language"))
    if forced is None and model in LANGUAGE_REPORTING_MODELS:
        candidates = [c for c in (primary(x) for x in config.get("languages") or []) if c]
        if candidates and spoken_code not in candidates:
            forced = candidates[0]
    recognised = forced is None or forced == spoken_code
    out = text if recognised else misheard(text)
    out = apply_keywords(out, prompt_words(config.get("prompt")))
    if model in LANGUAGE_REPORTING_MODELS:
        out = apply_keywords(out, [k for k in config.get("keywords") or [] if isinstance(k, str)])
        languages: list[dict[str, str]] | None = [{"code": spoken_code if recognised else str(forced)}]
    else:
        languages = None
    return Transcript(out, languages, recognised)
