"""Conversation items: the client's create, retrieve, delete and truncate, and what the model reads.

Rules:

- ``items`` is the default conversation in order; ``item_audio`` holds each audio item's PCM16
  and rate beside it (events never carry it: :func:`~.outputs.public_item`). User audio is kept in
  the input format's rate, assistant audio as it was generated.
- A created item may name ``previous_item_id`` (or ``"root"``) that must exist; its id, if given,
  must be new; an assistant message cannot carry audio. The server fills ``id`` and sets
  ``status: completed``. A user audio item's audio is heard at once (:mod:`.hearing`).
- ``retrieve`` is the only event that shows audio bytes: encoded in the input format for user
  items and in the output format for assistant items.
- Truncation applies to assistant audio only, never past its end; the transcript is cut in
  proportion to the audio kept.
- What the model understands of a user item (:meth:`ConversationPart._user_text`): its text, or
  for audio what the caller said, whatever the ASR made of it.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from .. import audio, ids, wire_json
from . import events as ev
from .outputs import Output, public_item
from .session_config import audio_format
from .session_state import SessionState


class ConversationPart(SessionState):
    def _item(self, item_id: Any) -> dict[str, Any] | None:
        return next((i for i in self.items if i["id"] == item_id), None)

    def _prev_of(self, item_id: str) -> str | None:
        for i, it in enumerate(self.items):
            if it["id"] == item_id:
                return self.items[i - 1]["id"] if i else None
        return None

    def _on_conversation_item_create(self, msg: dict[str, Any], now: float, event_id: str | None) -> list[Output]:
        item = msg["item"]  # msg was parsed from this frame alone: the session owns it, no copy needed
        prev_id = msg.get("previous_item_id")
        if prev_id is not None and prev_id != "root" and self._item(prev_id) is None:
            return [ev.error("invalid_value", f"Error adding item: the previous item with id '{prev_id}' does not "
                             "exist.", param="previous_item_id", event_id=event_id)]
        if item.get("id") and self._item(item["id"]) is not None:
            return [ev.error("invalid_value", f"Error adding item: an item with id '{item['id']}' already exists.",
                             param="item.id", event_id=event_id)]
        if item.get("type") == "message" and item.get("role") == "assistant" and any(
                c.get("type") == "output_audio" for c in item.get("content") or []):
            return [ev.error("invalid_value", "Assistant messages cannot contain audio content.",
                             param="item.content", event_id=event_id)]
        item.setdefault("id", ids.server_id("item"))
        item.pop("object", None)
        if item.get("type") in ("message", "function_call", "function_call_output"):
            item["status"] = "completed"
        audio_part = None
        for part in item.get("content") or []:
            if part.get("type") == "input_audio":
                audio_part = part
                part.setdefault("transcript", None)
        if audio_part is not None and audio_part.get("audio"):
            try:
                raw = audio.b64decode(audio_part["audio"])
            except (binascii.Error, ValueError):
                return [ev.error("invalid_value", "Invalid 'item.content.audio'. Expected base64-encoded audio data.",
                                 param="item.content", event_id=event_id)]
            self.item_audio[item["id"]] = audio.decode_wire(raw, self._input_format())  # type: ignore[arg-type]
        if prev_id == "root":
            self.items.insert(0, item)
            prev = None
        elif prev_id is not None:
            idx = next(i for i, it in enumerate(self.items) if it["id"] == prev_id)
            self.items.insert(idx + 1, item)
            prev = prev_id
        else:
            prev = self.items[-1]["id"] if self.items else None
            self.items.append(item)
        heard: list[Output] = []
        if item.get("type") == "message" and item.get("role") == "user":
            if self._turn_plan.by_order:
                self._assigned[item["id"]] = self._turn_plan.assign()
            if item["id"] in self.item_audio:
                heard = self._listen(item["id"], *self.item_audio[item["id"]], now)
        return [ev.event("conversation.item.added", previous_item_id=prev, item=public_item(item)),
                ev.event("conversation.item.done", previous_item_id=prev, item=public_item(item)), *heard]

    def _not_found(self, verb: str, item_id: Any, event_id: str | None) -> dict[str, Any]:
        return ev.error("invalid_value", f"Error {verb} item: the item with id '{item_id}' does not exist.",
                        param="item_id", event_id=event_id)

    def _on_conversation_item_retrieve(self, msg: dict[str, Any], now: float, event_id: str | None) -> list[Output]:
        item = self._item(msg["item_id"])
        if item is None:
            return [self._not_found("retrieving", msg["item_id"], event_id)]
        full = wire_json.copy(item)
        if item["id"] in self.item_audio:
            pcm, rate = self.item_audio[item["id"]]
            role_fmt = self._input_format() if item.get("role") == "user" else self._output_format()
            wire = audio.encode_wire(pcm, rate, role_fmt)  # type: ignore[arg-type]
            for part in full.get("content") or []:
                if part.get("type") in ("input_audio", "output_audio"):
                    part["audio"] = base64.b64encode(wire).decode()
                    if part["type"] == "output_audio":
                        part["format"] = audio_format(role_fmt)
                    break
        return [ev.event("conversation.item.retrieved", item=full)]

    def _on_conversation_item_delete(self, msg: dict[str, Any], now: float, event_id: str | None) -> list[Output]:
        item = self._item(msg["item_id"])
        if item is None:
            return [self._not_found("deleting", msg["item_id"], event_id)]
        self.items.remove(item)
        self.item_audio.pop(item["id"], None)
        return [ev.event("conversation.item.deleted", item_id=item["id"])]

    def _on_conversation_item_truncate(self, msg: dict[str, Any], now: float, event_id: str | None) -> list[Output]:
        item = self._item(msg["item_id"])
        if item is None:
            return [self._not_found("truncating", msg["item_id"], event_id)]
        if item.get("role") != "assistant" or item["id"] not in self.item_audio:
            return [ev.error("invalid_value", "Only assistant messages with audio content can be truncated.",
                             param="item_id", event_id=event_id)]
        idx, end_ms = msg["content_index"], msg["audio_end_ms"]
        content = item.get("content") or []
        if not 0 <= idx < len(content):
            return [ev.error("invalid_value", f"Invalid content_index: {idx}.", param="content_index",
                             event_id=event_id)]
        pcm, rate = self.item_audio[item["id"]]
        total = audio.duration_ms(pcm, rate)
        if end_ms > total:
            return [ev.error("invalid_value", f"Audio content of {int(total)}ms is already shorter than {end_ms}ms",
                             param="audio_end_ms", event_id=event_id)]
        self._truncate(item, idx, end_ms)
        return [ev.event("conversation.item.truncated", item_id=item["id"], content_index=idx, audio_end_ms=end_ms)]

    def _truncate(self, item: dict[str, Any], idx: int, end_ms: float) -> None:
        pcm, rate = self.item_audio[item["id"]]
        total = audio.duration_ms(pcm, rate) or 1.0
        self.item_audio[item["id"]] = (pcm[: audio.samples_for_ms(end_ms, rate) * 2], rate)
        part = item["content"][idx]
        if part.get("transcript"):
            words = part["transcript"].split()
            part["transcript"] = " ".join(words[: int(len(words) * end_ms / total)])

    def _user_text(self, item: dict[str, Any]) -> str:
        for part in item.get("content") or []:
            if part.get("type") == "input_text":
                return str(part.get("text") or "")
            if part.get("type") == "input_audio":
                # the model hears the audio itself: what the caller said, whatever the ASR made of it
                if item["id"] in self._spoken_items:
                    return self.heard(item["id"])
                return str(part.get("transcript") or self.heard(item["id"]))
        return ""
