"""Output generation: a planned response streamed as paced events (and audio for the media path).

Rules:

- Nothing is emitted at ``response.created``: each output is opened, streamed and closed by timers
  from ``response_latency_s`` on. Audio is generated ``generation_speed`` times faster than real
  time in ``AUDIO_CHUNK_MS`` chunks, each with its share of the transcript; function arguments go
  in 8-character pieces, text word by word.
- A WebSocket client gets one ``response.output_audio.delta`` per chunk, at its own time, so a
  cancel stops the audio within one chunk. A SIP session without audio deltas gets the chunks due
  within one ``GENERATION_TICK_S`` as one :class:`~.outputs.AudioOut` (one journal entry, one push),
  and ``output_audio_buffer.started`` with its first audio; its playback end is tracked for
  :mod:`.playback`.
- ``max_output_tokens`` cuts generation where the budget runs out; the response then ends
  ``incomplete`` at that point.
- Every timer checks that the response is still in progress; closing an output after a cancel
  keeps only what was emitted (text, arguments, and audio: the item keeps the audio sent).
"""

from __future__ import annotations

import base64
import re
from functools import partial
from typing import Any

from .. import audio
from . import events as ev
from . import usage as u
from .outputs import AudioOut, Output, public_item
from .session_state import PlannedOutput, ResponseState, SessionState
from .voice import voice_name

AUDIO_CHUNK_MS = 100
# Output audio is generated faster than realtime (ScriptConfig.generation_speed).  For a call whose
# audio goes only to the media path (SIP, virtual callers), the chunks due within one tick go out from
# one timer as one AudioOut, so a long reply costs a timer per tick, not per chunk.
GENERATION_TICK_S = 0.1


class GenerationPart(SessionState):
    def _schedule_output(self, resp: ResponseState, now: float) -> None:
        t = now + self.script.response_latency_s
        speed = self.script.generation_speed
        limit = resp.max_output_tokens if isinstance(resp.max_output_tokens, int) else None
        spent = 0  # output tokens generated so far, against max_output_tokens

        def over(tokens: int) -> bool:
            nonlocal spent
            spent += tokens
            return limit is not None and spent >= limit

        for idx, out in enumerate(resp.outputs):
            self._at(t, partial(self._open_output, resp, out, idx))
            if out.item["type"] == "function_call":
                for p in _chunks(out.text, 8):
                    t += 0.005
                    self._at(t, partial(self._args_delta, resp, out, idx, p))
                    if over(u.text_tokens(p)):
                        return self._cut_short(resp, t)
            elif out.pcm:
                total = audio.duration_ms(out.pcm, out.rate)
                n_chunks = max(1, int(-(-total // AUDIO_CHUNK_MS)))
                words = re.findall(r"\S+\s*", out.text) or [out.text]
                per = -(-len(words) // n_chunks)
                step = AUDIO_CHUNK_MS / 1000.0 / speed
                # only where no client sees per-chunk deltas: a WebSocket client keeps 100 ms deltas at
                # their own times, so a cancel still stops the audio within one chunk
                media_only = self.transport == "sip" and not self.sip_audio_deltas
                group = 1 if limit is not None else max(1, round(GENERATION_TICK_S / step)) if media_only else 1
                for k0 in range(0, n_chunks, group):
                    ks = range(k0, min(k0 + group, n_chunks))
                    pieces = ["".join(words[k * per:(k + 1) * per]) for k in ks]
                    self._at(t, partial(self._audio_chunks, resp, out, idx, ks, pieces))
                    t += step * len(ks)
                    if over(u.assistant_audio_tokens(AUDIO_CHUNK_MS * len(ks)) + u.text_tokens("".join(pieces))):
                        return self._cut_short(resp, t)
            else:
                for w in re.findall(r"\S+\s*", out.text) or [out.text]:
                    self._at(t, partial(self._text_delta, resp, out, idx, w))
                    t += 0.01
                    if over(u.text_tokens(w)):
                        return self._cut_short(resp, t)
            self._at(t, partial(self._close_output, resp, out, idx))
        self._at(t, partial(self._finish, resp, "completed", None))

    def _cut_short(self, resp: ResponseState, t: float) -> None:
        """max_output_tokens reached: the response ends ``incomplete`` where generation stopped."""
        self._at(t, partial(self._finish, resp, "incomplete", "max_output_tokens"))

    @staticmethod
    def _ids(resp: ResponseState, out: PlannedOutput, idx: int) -> dict[str, Any]:
        return {"response_id": resp.id, "item_id": out.item["id"], "output_index": idx, "content_index": 0}

    def _open_output(self, resp: ResponseState, out: PlannedOutput, idx: int, now: float) -> list[Output]:
        if resp.status != "in_progress":
            return []
        out.open = True
        evs: list[Output] = [ev.event("response.output_item.added", response_id=resp.id, output_index=idx,
                                      item=public_item(out.item))]
        if resp.in_conversation:
            prev = self.items[-1]["id"] if self.items else None
            self.items.append(out.item)
            evs.append(ev.event("conversation.item.added", previous_item_id=prev, item=public_item(out.item)))
        if out.item["type"] == "message":
            part = {"type": "audio", "transcript": ""} if out.pcm else {"type": "text", "text": ""}
            out.part_open = True
            evs.append(ev.event("response.content_part.added", **self._ids(resp, out, idx), part=part))
        return evs

    def _args_delta(self, resp: ResponseState, out: PlannedOutput, idx: int, piece: str, now: float) -> list[Output]:
        if resp.status != "in_progress":
            return []
        out.emitted_text += piece
        return [ev.delta("response.function_call_arguments.delta", response_id=resp.id, item_id=out.item["id"],
                      output_index=idx, call_id=out.item["call_id"], delta=piece)]

    def _text_delta(self, resp: ResponseState, out: PlannedOutput, idx: int, piece: str, now: float) -> list[Output]:
        if resp.status != "in_progress":
            return []
        out.emitted_text += piece
        return [ev.delta("response.output_text.delta", **self._ids(resp, out, idx), delta=piece)]

    def _audio_chunks(self, resp: ResponseState, out: PlannedOutput, idx: int, ks: range, pieces: list[str],
                      now: float) -> list[Output]:
        """The audio chunks ``ks`` that came due in one generation tick, with their transcript pieces.

        Audio deltas, when a client gets them, are one per AUDIO_CHUNK_MS chunk; the media path gets
        the tick's audio as one AudioOut: one journal entry and one push, not one per chunk.
        """
        if resp.status != "in_progress":
            return []
        evs: list[Output] = []
        sip = self.transport == "sip"
        if sip and not resp.started_audio:
            evs.append(ev.event("output_audio_buffer.started", response_id=resp.id))
            self._playback_start[resp.id] = now
        resp.started_audio = True
        self._audio_out_started = True
        per_chunk = audio.samples_for_ms(AUDIO_CHUNK_MS, out.rate) * 2
        deltas = not sip or self.sip_audio_deltas
        for k, piece in zip(ks, pieces, strict=True):
            if piece:
                out.emitted_text += piece
                evs.append(ev.delta("response.output_audio_transcript.delta", **self._ids(resp, out, idx),
                                 delta=piece))
            if deltas:
                wire = audio.encode_wire(out.pcm[k * per_chunk:(k + 1) * per_chunk], out.rate,
                                         resp.out_format["type"])
                evs.append(ev.delta("response.output_audio.delta", **self._ids(resp, out, idx),
                                 delta=base64.b64encode(wire).decode()))
        pcm = out.pcm[ks.start * per_chunk:ks.stop * per_chunk]
        ms = audio.duration_ms(pcm, out.rate)
        out.emitted_ms += ms
        if sip:
            if self._media_muted():
                pcm = bytes(len(pcm))  # forced_format_static, effect silence: the caller hears nothing
            evs.append(AudioOut(pcm, out.rate, resp.id, out.item["id"], corrupt=self._media_corrupt(),
                                voice=voice_name(resp.voice)))
            self._playback[resp.id] = max(self._playback.get(resp.id, now), now) + ms / 1000.0
        return evs

    def _close_output(self, resp: ResponseState, out: PlannedOutput, idx: int, now: float) -> list[Output]:
        if not out.open:
            return []
        out.open = False
        cancelled = resp.status != "in_progress"
        out.item["status"] = "incomplete" if cancelled else "completed"
        evs: list[Output] = []
        ids_ = self._ids(resp, out, idx)
        if out.item["type"] == "function_call":
            out.item["arguments"] = out.emitted_text if cancelled else out.text
            evs.append(ev.event("response.function_call_arguments.done", response_id=resp.id,
                                item_id=out.item["id"], output_index=idx, call_id=out.item["call_id"],
                                name=out.item["name"], arguments=out.item["arguments"]))
        elif out.pcm:
            transcript = out.emitted_text if cancelled else out.text
            if not cancelled and out.emitted_text != out.text:
                rest = out.text[len(out.emitted_text):]
                if rest:
                    evs.append(ev.delta("response.output_audio_transcript.delta", **ids_, delta=rest))
            evs.append(ev.event("response.output_audio.done", **ids_))
            evs.append(ev.event("response.output_audio_transcript.done", **ids_, transcript=transcript))
            evs.append(ev.event("response.content_part.done", **ids_, part={"type": "audio",
                                                                            "transcript": transcript}))
            out.item["content"] = [{"type": "output_audio", "transcript": transcript}]
            played = out.pcm[: audio.samples_for_ms(out.emitted_ms, out.rate) * 2]
            self.item_audio[out.item["id"]] = (played, out.rate)
        else:
            text = out.emitted_text if cancelled else out.text
            evs.append(ev.event("response.output_text.done", **ids_, text=text))
            evs.append(ev.event("response.content_part.done", **ids_, part={"type": "text", "text": text}))
            out.item["content"] = [{"type": "output_text", "text": text}]
        if resp.in_conversation:
            prev = self._prev_of(out.item["id"])
            evs.append(ev.event("conversation.item.done", previous_item_id=prev, item=public_item(out.item)))
        evs.append(ev.event("response.output_item.done", response_id=resp.id, output_index=idx,
                            item=public_item(out.item)))
        return evs


def _chunks(text: str, n: int) -> list[str]:
    return [text[i:i + n] for i in range(0, len(text), n)] or [""]
