"""The fake GPT-Live model: what it answers to what the caller said, and the audio it speaks.

It reads the Realtime behaviour script (:class:`~mock_api.realtime.script.Script`), so one scenario
script drives both surfaces. Rules, for each utterance the caller finishes:

1. The first unused turn whose ``hears`` is in what was heard (as whole words; case, spacing and
   punctuation ignored) answers it.
2. Else the first unused turn whose ``match_text`` is in what was heard, the same way.
3. Else, in a script where no turn has ``hears`` or ``match_text``, the next unused turn in order.
4. Else nothing in the script: ``default_reply``.

A turn is used once; it says its ``audio`` file (loaded through the injected loader at 24 kHz) with
``says`` as transcript, else ``says`` as synthetic speech (:mod:`mock_api.realtime.voice`, one
pitch per voice, ``ms_per_char`` long); the words are spread evenly over the audio's chunks. A
behaviour whose media path plays another rate (a SIP leg) makes each reply at that rate too, as the
Realtime model does for a G.711 call, so no reply is resampled chunk by chunk on its way to the caller.
``match_clip`` does not apply here: the Live core is handed recognised text. A turn with
``tool_calls`` is work the model delegates (:mod:`.delegation`) rather than answers. A greeting (when
the model speaks first) is the script's ``greeting``, else its ``default_reply``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import audio
from ..realtime.generation import AUDIO_CHUNK_MS
from ..realtime.script import Script, Turn
from ..realtime.voice import reply_ms, speech_like, voice_name, voice_pitch

RATE = 24000
AudioLoader = Callable[[str, int], bytes]  # (path, rate) -> mono PCM16 at rate


@dataclass(frozen=True)
class Reply:
    """What the model says: 24 kHz PCM16 in ``AUDIO_CHUNK_MS`` chunks, each with its share of the words."""

    text: str
    chunks: tuple[tuple[bytes, str], ...]
    voice: str
    media: tuple[bytes, ...] = ()  # the same audio chunk by chunk at media_rate (empty: the chunks themselves)
    media_rate: int = RATE


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@dataclass
class Behaviour:
    script: Script
    audio_loader: AudioLoader
    voice: Any
    media_rate: int = RATE  # the rate the media path plays replies at (a SIP leg: 8 kHz)
    _used: set[int] = field(default_factory=set)

    def answer(self, heard: str) -> Reply:
        return self.reply(self.turn_for(heard))

    def reply(self, turn: Turn | None) -> Reply:
        """What the model says to a turn it answers itself (``None``: nothing in the script matched)."""
        if turn is None:
            return self.say(self.script.default_reply)
        return self.say(turn.says or self.script.default_reply, turn.audio)

    def used_turns(self) -> set[int]:
        """The script turns answered so far (the conversation's position, which a fork continues from)."""
        return set(self._used)

    def continue_from(self, used: frozenset[int]) -> None:
        """Take up a stored session's conversation: its used turns stay used."""
        self._used |= used

    def greeting(self) -> Reply:
        return self.say(self.script.greeting or self.script.default_reply)

    def turn_for(self, heard: str) -> Turn | None:
        """The script turn answering ``heard`` (used up), by the rules above."""
        said = f" {_words(heard)} "
        turns = self.script.turns
        free = [i for i in range(len(turns)) if i not in self._used]
        for attr in ("hears", "match_text"):
            for i in free:
                want = _words(getattr(turns[i], attr) or "")
                if want and f" {want} " in said:
                    self._used.add(i)
                    return turns[i]
        if free and not any(t.hears or t.match_text for t in turns):
            self._used.add(free[0])
            return turns[free[0]]
        return None

    def say(self, text: str, audio_file: str | None = None) -> Reply:
        chunks = _chunks(self._audio(text, audio_file, RATE), text)
        if self.media_rate == RATE:
            return Reply(text, chunks, voice_name(self.voice))
        media = _media_chunks(self._audio(text, audio_file, self.media_rate), self.media_rate, len(chunks))
        return Reply(text, chunks, voice_name(self.voice), media, self.media_rate)

    def _audio(self, text: str, audio_file: str | None, rate: int) -> bytes:
        """The reply's audio at ``rate``, made at that rate (not resampled from another: loads are cached)."""
        if audio_file:
            return self.audio_loader(audio_file, rate)
        return speech_like(reply_ms(text, self.script.ms_per_char), rate, pitch_hz=voice_pitch(self.voice))


def _chunks(pcm: bytes, text: str) -> tuple[tuple[bytes, str], ...]:
    """Split the audio into AUDIO_CHUNK_MS chunks and spread the words over them, in order."""
    size = audio.samples_for_ms(AUDIO_CHUNK_MS, RATE) * 2
    pieces = [pcm[i:i + size] for i in range(0, len(pcm), size)] or [b""]
    words = re.findall(r"\S+\s*", text) or [text]
    at = [i * len(pieces) // len(words) for i in range(len(words))]  # word i starts in chunk at[i]
    return tuple((chunk, "".join(w for w, c in zip(words, at, strict=True) if c == k))
                 for k, chunk in enumerate(pieces))


def _media_chunks(pcm: bytes, rate: int, n: int) -> tuple[bytes, ...]:
    """The media copy cut as the reply's ``n`` chunks are (the last takes what is left)."""
    size = audio.samples_for_ms(AUDIO_CHUNK_MS, rate) * 2
    return tuple(pcm[k * size:(k + 1) * size] if k < n - 1 else pcm[k * size:] for k in range(n))
