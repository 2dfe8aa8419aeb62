"""Hearing: what the caller said in each user audio item, and its input transcription.

Rules:

- The script decides first: the item's turn's ``hears`` (or an explicit ``Script.default_hears``).
  Otherwise the injected recogniser decides from the audio (:mod:`mock_api.recognisers`: a known
  clip by fingerprint, then any plug-in; the default recognises ``audio_fixtures/``). Audio nobody
  recognised is heard as ``[unrecognised audio, N s]``, never as invented words. Each decision is
  one :class:`~.outputs.Heard` output.
- A slow plug-in answers with a Future. The session never waits on it: timers poll it every
  ``HEARING_POLL_S`` and the Heard output and transcription follow once it is done. A recogniser
  that raises hears nothing (unrecognised, with why); it never takes the call down.
- The realtime model always understands the caller (:meth:`HearingPart.heard`). Input
  transcription (``audio.input.transcription``) is the ASR's view and may differ: a ``language``
  that is not the one spoken makes it mis-hear (deterministically, :mod:`.transcription`).
  Without transcription configured no transcription events are sent at all (failure mode 1); the
  ``transcription_403`` fault fails each one.
- An item's script turn is assigned once (:mod:`.turn_plan`): at commit for a by-order script,
  else when first needed. A matched script needs the caller's words: the automatic response of a
  turn whose recognition runs on a thread is created once it is known (:mod:`.input_buffer`); any
  other reply (an app's own ``response.create``) goes by what is known then: the session runs on the
  event loop and never waits for a thread.
"""

from __future__ import annotations

import re
from concurrent.futures import Future
from functools import partial
from typing import Any

from .. import audio, models, wire_json
from ..recognisers import Recognition, default_recogniser, unrecognised, unrecognised_text
from . import events as ev
from . import usage as u
from .outputs import Heard, Output
from .script import Turn
from .session_state import SessionState
from .transcription import primary, transcribe, verbatim
from .turn_plan import Assignment

HEARING_POLL_S = 0.05  # how often a slow recogniser's answer is looked for


class HearingPart(SessionState):
    def heard(self, item_id: str) -> str:
        """What the caller said in this audio item (what the model understands).

        The script's words when it says (``Turn.hears``, else an explicit ``default_hears``);
        otherwise what the recogniser found in the audio, or the unrecognised placeholder.
        """
        said = self._scripted(item_id)
        if said is not None:
            return said
        result = self._recognition(item_id)
        if result is None:  # a slow plug-in has not answered yet: nothing is known so far
            return unrecognised_text(self._item_ms(item_id))
        return result.text

    def spoken_language(self, item_id: str) -> str:
        """The language the caller speaks in this item: the turn's ``language`` (default "en"),
        or the recognised clip's sidecar language when the audio, not the script, decided."""
        turn = self._turn(item_id)
        if self._scripted(item_id) is None:
            result = self._recognition(item_id)
            if result is not None and result.language:
                return primary(result.language) or turn.language
        return turn.language

    def pending_recognitions(self) -> list[Future[Recognition]]:
        """Recognitions still running on plug-in threads (an adapter may wake the session when one ends)."""
        return [f for f in self._heard.values() if isinstance(f, Future) and not f.done()]

    def _scripted(self, item_id: str) -> str | None:
        """The script's words for this item, once its turn is known (a matched script hears first)."""
        turn = self._turn(item_id) if item_id in self._assigned else Turn()
        return turn.hears if turn.hears is not None else self.script.default_hears

    def _turn(self, item_id: str) -> Turn:
        return self._turn_plan.turn(self._assignment(item_id))

    def _assignment(self, item_id: str) -> Assignment:
        """The item's script turn; a matched script decides it now if it has not (what is known so far)."""
        got = self._assigned.get(item_id)
        if got is None:
            item = next((it for it in self.items if it.get("id") == item_id), None)
            if item_id in self.item_audio:
                rec = self._recognition(item_id)
                if rec is not None and rec.recognised:
                    got = self._turn_plan.assign(clip=rec.clip, text=rec.text, ends_utterance=rec.ends_utterance)
                else:
                    got = self._turn_plan.assign()
            else:
                got = self._turn_plan.assign(text=self._user_text(item) if item is not None else None)
            self._assigned[item_id] = got
        return got

    def _item_ms(self, item_id: str) -> float:
        pcm, rate = self.item_audio.get(item_id, (b"", 8000))
        return audio.duration_ms(pcm, rate)

    def _listen(self, item_id: str, pcm: bytes, rate: int, now: float) -> list[Output]:
        """Decide what the caller said in a new user audio item: the script, else the recogniser."""
        said = self._scripted(item_id)
        ms = audio.duration_ms(pcm, rate)
        got: Recognition | Future[Recognition]
        if said is not None:
            got = Recognition(said, True, "script", "the script says what the caller said", ms)
        else:
            try:
                got = (self.recogniser or default_recogniser())(pcm, rate)
            except Exception as exc:  # a broken recogniser must not take the call down
                got = unrecognised(ms, f"recogniser failed: {exc!r}")
        self._heard[item_id] = got
        if isinstance(got, Future):
            self._at(now + HEARING_POLL_S, partial(self._await_heard, item_id))
            return []
        return [Heard(item_id, got, self._assignment(item_id))]

    def _await_heard(self, item_id: str, now: float) -> list[Output]:
        result = self._recognition(item_id)
        if result is None:
            self._at(now + HEARING_POLL_S, partial(self._await_heard, item_id))
            return []
        return [Heard(item_id, result, self._assignment(item_id))]

    def recognition_pending(self, item_id: str) -> bool:
        """Whether what the caller said in this item is still being worked out on a thread."""
        got = self._heard.get(item_id)
        return isinstance(got, Future) and not got.done()

    def _recognition(self, item_id: str) -> Recognition | None:
        """The item's recognition; None while a plug-in is still running."""
        got = self._heard.get(item_id)
        if got is None:
            return unrecognised(self._item_ms(item_id), "no audio to recognise")
        if isinstance(got, Future):
            if not got.done():
                return None
            try:
                got = got.result()
            except Exception as exc:
                got = unrecognised(self._item_ms(item_id), f"recogniser failed: {exc!r}")
            self._heard[item_id] = got
        return got

    # ---- input transcription -------------------------------------------------------------------

    def _schedule_transcription(self, item_id: str, audio_ms: float, now: float) -> None:
        tcfg = self._input_cfg().get("transcription")
        if not isinstance(tcfg, dict):
            return  # failure mode 1: transcript stays null, no events at all
        due = now + self.script.transcription_delay_s
        if self._fault("transcription_403"):
            def failed(t: float) -> list[Output]:
                return [ev.event(
                    "conversation.item.input_audio_transcription.failed", item_id=item_id, content_index=0,
                    error={"type": "server_error", "code": None, "param": None,
                           "message": f"Input transcription failed for item '{item_id}'. 403 Forbidden"})]

            self._at(due, failed)
            return
        self._at(due, partial(self._transcribe, item_id, audio_ms, wire_json.copy(tcfg)))

    def _transcribe(self, item_id: str, audio_ms: float, tcfg: dict[str, Any], now: float) -> list[Output]:
        """Stream the transcript once what was said is known (a slow plug-in delays it)."""
        result = None if self._scripted(item_id) is not None else self._recognition(item_id)
        if self._scripted(item_id) is None and result is None:
            self._at(now + HEARING_POLL_S, partial(self._transcribe, item_id, audio_ms, tcfg))
            return []
        model = str(tcfg.get("model") or models.DEFAULT_TRANSCRIPTION)
        if result is not None and not result.recognised:
            heard = verbatim(result.text, tcfg)
        else:
            heard = transcribe(self.heard(item_id), self.spoken_language(item_id), tcfg)
        text = heard.text
        words = [text] if model == "whisper-1" else re.findall(r"\S+\s*", text) or [text]
        logprobs = "item.input_audio_transcription.logprobs" in (self.config.get("include") or [])
        out: list[Output] = []
        for i, piece in enumerate(words):
            extra = {"logprobs": _logprobs(piece)} if logprobs else {}
            if i == 0:
                out.extend(_transcription_delta(item_id, piece, extra, now))
            else:
                self._at(now + i * 0.02, partial(_transcription_delta, item_id, piece, extra))

        def completed(t: float) -> list[Output]:
            item = self._item(item_id)
            if item is not None:
                item["content"][0]["transcript"] = text
            extra: dict[str, Any] = {"logprobs": _logprobs(text)} if logprobs else {}
            if heard.languages is not None:
                extra["languages"] = heard.languages
            return [ev.event("conversation.item.input_audio_transcription.completed", item_id=item_id,
                             content_index=0, transcript=text,
                             usage=u.transcription_usage(model, audio_ms, text, tcfg.get("prompt")), **extra)]

        self._at(now + len(words) * 0.02 + 0.05, completed)
        return out


def _transcription_delta(item_id: str, piece: str, extra: dict[str, Any], now: float) -> list[Output]:
    return [ev.delta("conversation.item.input_audio_transcription.delta", item_id=item_id, content_index=0,
                  delta=piece, **extra)]


def _logprobs(text: str) -> list[dict[str, Any]]:
    return [{"token": w, "bytes": list(w.encode()), "logprob": -0.05} for w in re.findall(r"\S+\s*", text)]
