"""Token accounting shaped like the real service's.

Rates from the costs guide: user audio 1 token / 100 ms, assistant audio 1 token / 50 ms;
text ≈ 4 characters per token plus a few special tokens per message. Cached input is the
stable prefix of the previous response's input, in 64-token blocks. These are estimates
meant to make cost arithmetic plausible and consistent (input includes cached, total =
input + output), not to match a tokenizer.
"""

from __future__ import annotations

import math
from typing import Any

MESSAGE_OVERHEAD = 4


def text_tokens(text: str | None) -> int:
    return math.ceil(len(text) / 4) if text else 0


def user_audio_tokens(ms: float) -> int:
    return math.ceil(ms / 100) if ms > 0 else 0


def assistant_audio_tokens(ms: float) -> int:
    return math.ceil(ms / 50) if ms > 0 else 0


def response_usage(
    *, in_text: int, in_audio: int, cached_prefix: int, out_text: int, out_audio: int
) -> dict[str, Any]:
    """``response.done.response.usage``; ``cached_prefix`` = previous response's input tokens."""
    input_tokens = in_text + in_audio
    cached = min(input_tokens, (min(cached_prefix, input_tokens) // 64) * 64)
    cached_audio = min(in_audio, round(cached * in_audio / input_tokens)) if input_tokens else 0
    return {
        "total_tokens": input_tokens + out_text + out_audio,
        "input_tokens": input_tokens,
        "output_tokens": out_text + out_audio,
        "input_token_details": {
            "text_tokens": in_text,
            "audio_tokens": in_audio,
            "image_tokens": 0,
            "cached_tokens": cached,
            "cached_tokens_details": {"text_tokens": cached - cached_audio, "audio_tokens": cached_audio,
                                      "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
    }


DURATION_BILLED = ("whisper-1",)


def transcription_usage(model: str, audio_ms: float, transcript: str, prompt: str | None) -> dict[str, Any]:
    """Usage on ``…input_audio_transcription.completed``: seconds for whisper-1, tokens otherwise."""
    if model in DURATION_BILLED:
        return {"type": "duration", "seconds": round(audio_ms / 1000.0, 3)}
    audio = user_audio_tokens(audio_ms)
    text_in = text_tokens(prompt)
    out = text_tokens(transcript)
    return {
        "type": "tokens",
        "total_tokens": audio + text_in + out,
        "input_tokens": audio + text_in,
        "input_token_details": {"text_tokens": text_in, "audio_tokens": audio},
        "output_tokens": out,
    }
