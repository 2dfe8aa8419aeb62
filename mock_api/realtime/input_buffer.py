"""The input audio buffer and turn detection: caller audio in, committed user audio items out.

Rules:

- The buffer holds PCM16 at the input format's rate (24 kHz for ``audio/pcm``, 8 kHz for G.711);
  audio arriving at another rate is resampled on the way in. ``_audio_ms`` counts every ms ever
  written and ``_buffer_start_ms`` is where the buffer now starts, both in audio time, which is
  what ``audio_start_ms``/``audio_end_ms`` report.
- With ``turn_detection`` set, the session's own VAD (:mod:`.vad`) finds speech: a start emits
  ``speech_started`` (and barges in on a reply when ``interrupt_response``); a stop commits the
  audio from the padded start to the end of the trailing silence and, with ``create_response``,
  asks for a reply if none is active. With a matched script, a turn whose recognition still runs on
  a thread gets its reply once it is known (unless a reply began or the caller spoke meanwhile).
  A SIP media path may report speech itself instead (the facade's ``media_*`` entry points);
  audio it keeps to itself is accounted for as silence.
- ``input_audio_buffer.commit`` needs at least ``MIN_COMMIT_MS`` of audio; ``clear`` drops it all.
- server_vad's ``idle_timeout_ms`` fires only when nothing is happening (no response, no playback,
  no speech) and at least ``MIN_COMMIT_MS`` of audio arrived to commit: then that audio becomes an
  item and, on a realtime session, the model is prompted.
"""

from __future__ import annotations

import binascii
from functools import partial
from typing import Any

from .. import audio, ids
from . import events as ev
from .hearing import HEARING_POLL_S
from .outputs import Output, public_item
from .session_state import SessionState

MAX_APPEND_BYTES = 15 * 1024 * 1024
MIN_COMMIT_MS = 100.0


class InputBufferPart(SessionState):
    def _pad_buffer_to(self, ms: float) -> None:
        """Account for caller audio the media path heard but did not hand over (as silence)."""
        missing = ms - self._audio_ms
        if missing > 0:
            rate = self._buffer_rate()
            pcm = audio.silence(missing, rate)
            self._buffer.extend(pcm)
            self._audio_ms += audio.duration_ms(pcm, rate)

    def _lay_in(self, pcm: bytes, rate: int, start_ms: float) -> None:
        """Put a turn's audio handed over by the media path at audio time ``start_ms`` (no VAD on it)."""
        rate_in = self._buffer_rate()
        if rate != rate_in:
            pcm = audio.resample(pcm, rate, rate_in)
        self._pad_buffer_to(float(start_ms))
        at = audio.samples_for_ms(float(start_ms) - self._buffer_start_ms, rate_in) * 2
        if at < 0:  # its start was already committed or cleared
            pcm, at = pcm[-at:], 0
        self._buffer[at:at + len(pcm)] = pcm
        held = len(self._buffer) / 2 * 1000.0 / rate_in
        self._audio_ms = max(self._audio_ms, self._buffer_start_ms + held)

    def _on_input_audio_buffer_append(self, msg: dict[str, Any], now: float, event_id: str | None) -> list[Output]:
        data = msg.get("audio", "")
        if len(data) > MAX_APPEND_BYTES * 4 // 3 + 4:
            return [ev.error("invalid_value",
                             f"Audio content of {len(data)} bytes exceeds the maximum of {MAX_APPEND_BYTES} bytes "
                             "per input_audio_buffer.append event.", param="audio", event_id=event_id)]
        try:
            raw = audio.b64decode(data)
        except (binascii.Error, ValueError):
            return [ev.error("invalid_value", "Invalid 'audio'. Expected base64-encoded audio data.",
                             param="audio", event_id=event_id)]
        fmt = self._input_format()
        pcm, rate = audio.decode_wire(raw, fmt)  # type: ignore[arg-type]
        return self._input_audio(pcm, rate, now)

    _on_session_input_audio_buffer_append = _on_input_audio_buffer_append

    def _input_audio(self, pcm: bytes, rate: int, now: float) -> list[Output]:
        rate_in = self._buffer_rate()
        if rate != rate_in:
            pcm = audio.resample(pcm, rate, rate_in)
        start_ms = self._audio_ms
        self._buffer.extend(pcm)
        self._audio_ms += audio.duration_ms(pcm, rate_in)
        out: list[Output] = []
        if self._detector is None:
            return out
        for vad_ev in self._detector.process(pcm, rate_in, start_ms):
            if vad_ev.kind == "start":
                out.extend(self._speech_started(vad_ev.ms, now))
            else:
                out.extend(self._speech_stopped(vad_ev.ms, now))
        return out

    def _buffer_ms(self) -> float:
        return audio.duration_ms(bytes(self._buffer), self._buffer_rate())

    def _speech_started(self, ms: int, now: float) -> list[Output]:
        self._pending_item_id = ids.server_id("item")
        self._speech_start_ms = ms
        self._idle_since = None
        out: list[Output] = [ev.event("input_audio_buffer.speech_started", audio_start_ms=ms,
                                      item_id=self._pending_item_id)]
        td = self._input_cfg().get("turn_detection") or {}
        if td.get("interrupt_response", True):
            out.extend(self._barge_in(now))
        return out

    def _speech_stopped(self, ms: int, now: float) -> list[Output]:
        item_id = self._pending_item_id or ids.server_id("item")
        out: list[Output] = [ev.event("input_audio_buffer.speech_stopped", audio_end_ms=ms, item_id=item_id)]
        start = self._speech_start_ms or 0
        # the committed audio runs from the (padded) speech start to the end of the trailing silence
        out.extend(self._commit(item_id, now, start_ms=float(start), end_ms=float(ms)))
        td = self._input_cfg().get("turn_detection") or {}
        self._pending_item_id = None
        self._speech_start_ms = None
        if td.get("create_response", True) and self.kind == "realtime" and self.active_response_id is None:
            out.extend(self._auto_respond(item_id, now))
        return out

    def _auto_respond(self, item_id: str, now: float) -> list[Output]:
        """Turn detection's reply to a committed turn, once a matched script can know what was said in it."""
        if self.recognition_pending(item_id) and not self._turn_plan.by_order:
            self._at(now + HEARING_POLL_S, partial(self._auto_respond, item_id))
            return []
        if self.active_response_id is not None or self._pending_item_id is not None or self._item(item_id) is None:
            return []  # meanwhile a reply began, the caller spoke again, or the item was deleted
        return self._create_response({}, now, None)

    def _on_input_audio_buffer_commit(self, msg: dict[str, Any], now: float, event_id: str | None) -> list[Output]:
        ms = self._buffer_ms()
        if ms < MIN_COMMIT_MS:
            return [ev.error("input_audio_buffer_commit_empty",
                             "Error committing input audio buffer: buffer too small. Expected at least 100ms of "
                             f"audio, but buffer only has {ms:.2f}ms of audio.", event_id=event_id)]
        item_id = self._pending_item_id or ids.server_id("item")
        self._pending_item_id = None
        if self._detector:
            self._detector.reset()
        return self._commit(item_id, now)

    def _on_input_audio_buffer_clear(self, msg: dict[str, Any], now: float, event_id: str | None) -> list[Output]:
        self._buffer.clear()
        self._buffer_start_ms = self._audio_ms
        self._pending_item_id = None
        if self._detector:
            self._detector.reset()
        return [ev.event("input_audio_buffer.cleared")]

    def _commit(self, item_id: str, now: float, start_ms: float | None = None,
                end_ms: float | None = None) -> list[Output]:
        """Turn the buffer (or the part of it between start_ms and end_ms) into a user audio item."""
        rate = self._buffer_rate()
        data = bytes(self._buffer)
        if start_ms is not None and end_ms is not None:
            a = max(0, audio.samples_for_ms(start_ms - self._buffer_start_ms, rate)) * 2
            b = max(a, audio.samples_for_ms(end_ms - self._buffer_start_ms, rate) * 2)
            data, rest = data[a:b], data[b:]
            self._buffer = bytearray(rest)
            self._buffer_start_ms = end_ms
        else:
            self._buffer.clear()
            self._buffer_start_ms = self._audio_ms
        prev = self.items[-1]["id"] if self.items else None
        item = {"id": item_id, "type": "message", "status": "completed", "role": "user",
                "content": [{"type": "input_audio", "transcript": None}]}
        self.items.append(item)
        self.item_audio[item_id] = (data, rate)
        self._spoken_items.add(item_id)
        if self._turn_plan.by_order:
            self._assigned[item_id] = self._turn_plan.assign()
        out: list[Output] = [
            ev.event("input_audio_buffer.committed", previous_item_id=prev, item_id=item_id),
            ev.event("conversation.item.added", previous_item_id=prev, item=public_item(item)),
            ev.event("conversation.item.done", previous_item_id=prev, item=public_item(item)),
        ]
        out.extend(self._listen(item_id, data, rate, now))
        self._schedule_transcription(item_id, audio.duration_ms(data, rate), now)
        return out

    # ---- server_vad idle timeout ---------------------------------------------------------------

    def _idle_deadline(self) -> float | None:
        td = self._input_cfg().get("turn_detection")
        if not isinstance(td, dict) or td.get("type") != "server_vad" or not td.get("idle_timeout_ms"):
            return None
        if self._idle_since is None or self.active_response_id is not None or self._playback:
            return None
        if (self._detector is not None and self._detector.in_speech) or self._pending_item_id is not None:
            return None
        if self._audio_ms - self._buffer_start_ms < MIN_COMMIT_MS:
            return None  # no audio came to commit (a client that streams none): no empty item, no event
        return self._idle_since + float(td["idle_timeout_ms"]) / 1000.0

    def _idle_timeout(self, now: float) -> list[Output]:
        """server_vad idle_timeout_ms: commit what is there and prompt the model.

        The real server commits the (silent) audio that arrived while the caller said nothing; see
        ``_idle_deadline`` for a client that sends none."""
        self._idle_since = None
        item_id = ids.server_id("item")
        start = int(self._buffer_start_ms)
        out: list[Output] = [ev.event("input_audio_buffer.timeout_triggered", audio_start_ms=start,
                                      audio_end_ms=int(self._audio_ms), item_id=item_id)]
        out.extend(self._commit(item_id, now))
        if self.kind == "realtime":
            out.extend(self._auto_respond(item_id, now))
        return out
