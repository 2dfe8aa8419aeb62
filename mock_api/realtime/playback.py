"""SIP playback: reply audio the caller is hearing, barge-in, and ``output_audio_buffer.clear``.

Rules:

- Only SIP sessions track playback: a response's audio plays from its first chunk
  (``output_audio_buffer.started``) until the end of everything generated, at real time;
  ``output_audio_buffer.stopped`` follows when it has all played (after ``response.done``).
- Barge-in (caller speech with ``interrupt_response``): the active response is cancelled
  (``turn_detected``); on SIP, every default-conversation response still playing is cut where the
  caller stopped hearing it: the media path drops the rest (:class:`~.outputs.ClearAudio`), the
  server truncates the assistant item to what was played, and ``output_audio_buffer.cleared`` says so.
- ``output_audio_buffer.clear`` does the same for everything playing, out-of-band responses included.
  With nothing playing it is still acknowledged, naming the latest response; before any response
  there is nothing to name and nothing is sent.
- Reply audio on the media path is garbled (``AudioOut.corrupt``) under ``static_audio``, and under
  ``static_after_update`` while the output format is not the SIP leg's G.711. Once
  ``forced_format_static`` fired (:mod:`.session_config`), it is garbled (``effect: static``) or
  replaced by silence of the same length (``effect: silence``).
"""

from __future__ import annotations

from typing import Any

from .. import audio
from ..faults import find
from . import events as ev
from .outputs import ClearAudio, Output
from .session_state import ResponseState, SessionState


class PlaybackPart(SessionState):
    def _media_corrupt(self) -> bool:
        if self.media_corrupt or self._forced_effect() == "static":
            return True
        return self._fault("static_after_update") and self._output_format() != self.sip_format

    def _media_muted(self) -> bool:
        return self._forced_effect() == "silence"

    def _forced_effect(self) -> str | None:
        """What forced_format_static does to the reply audio once it fired; None before (or without it)."""
        fault = find(self.faults, "forced_format_static") if self._format_forced else None
        return None if fault is None else str(fault.param("effect"))

    def _playback_done(self, resp: ResponseState, now: float) -> list[Output]:
        if resp.id not in self._playback:
            return []
        del self._playback[resp.id]
        return [ev.event("output_audio_buffer.stopped", response_id=resp.id)]

    def _barge_in(self, now: float) -> list[Output]:
        """Caller speech during a reply: cancel it (default conversation only) and cut the playback."""
        out: list[Output] = []
        resp = self._responses.get(self.active_response_id or "")
        if resp is not None and resp.status == "in_progress":
            out.extend(self._finish(resp, "cancelled", "turn_detected", now))
        if self.transport == "sip":
            for rid, end in list(self._playback.items()):
                if end > now and self._responses[rid].in_conversation:
                    del self._playback[rid]
                    self._cut_playback(self._responses[rid], now)
                    out.append(ClearAudio(rid))
                    out.append(ev.event("output_audio_buffer.cleared", response_id=rid))
        return out

    def _cut_playback(self, resp: ResponseState, now: float) -> None:
        """SIP: the server truncates the unheard part of the assistant item itself."""
        played_ms = (now - self._playback_start.get(resp.id, now)) * 1000.0
        for out in resp.outputs:
            if out.pcm and out.item["id"] in self.item_audio and out.item.get("content"):
                pcm, rate = self.item_audio[out.item["id"]]
                self._truncate(out.item, 0, min(played_ms, audio.duration_ms(pcm, rate)))

    def _on_output_audio_buffer_clear(self, msg: dict[str, Any], now: float, event_id: str | None) -> list[Output]:
        out: list[Output] = []
        for rid, end in list(self._playback.items()):
            del self._playback[rid]
            if end > now:
                self._cut_playback(self._responses[rid], now)
            out.append(ClearAudio(rid))
            out.append(ev.event("output_audio_buffer.cleared", response_id=rid))
        if not out:
            # nothing playing: acknowledge with the latest response (the SDK requires a response_id);
            # before any response there is nothing to name, so nothing is sent
            last = self.active_response_id or next(reversed(self._responses), None)
            if last is not None:
                out.append(ev.event("output_audio_buffer.cleared", response_id=last))
        return out
