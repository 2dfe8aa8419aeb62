"""Warnings for a report when the script's turns and the session's committed turns disagree.

A scenario author writes one script turn per utterance; the session commits a user turn per VAD
segment (the 200 ms server_vad default cuts an utterance at its pauses). The journal's
``audio.heard`` entries say, per committed turn, what was heard and which script turn answered
it (``script.how``: order, clip, text, unmatched, partial, none); from them and what the caller
played, this says where the two disagree and what to write instead.
"""

from __future__ import annotations

from pathlib import Path

from audio_fixtures import FixtureNotFound
from audio_fixtures import fixture as find_fixture
from mock_api import journal_entries as je
from mock_api.control_models import CallView
from mock_api.realtime.script import Script

from .journal_view import JournalView
from .scenario import CallSpec


def _utterances(spec: CallSpec) -> list[tuple[str, int]]:
    """(clip, utterances in it) for each fixture the caller plays; clips without a sidecar count one."""
    out = []
    for step in spec.steps:
        for ref in (step.say, step.barge_in):
            if ref is None:
                continue
            try:
                out.append((find_fixture(ref).name, max(1, len(find_fixture(ref).utterances))))
            except FixtureNotFound:
                out.append((Path(ref).stem, 1))
    return out


def turn_warnings(script: Script, spec: CallSpec, view: CallView) -> list[str]:
    """What a report should warn about for one call (empty when turns and utterances agree)."""
    if not script.turns:
        return []
    heard = [e.entry for e in JournalView.of_call(view).of(je.AudioHeard)]
    played = _utterances(spec)
    spoken = sum(n for _, n in played)
    warnings = []
    by_order = not any(t.match_clip or t.match_text for t in script.turns)
    if by_order and heard and len(heard) != spoken:
        split = _splits(heard)
        detail = f" ({'; '.join(split)})" if split else ""
        warnings.append(
            f"call {view.call_id}: the caller spoke {spoken} utterance{'s' if spoken != 1 else ''} but the session "
            f"committed {len(heard)} user turns{detail}; the script's turns go by order, so a turn may answer part "
            "of an utterance (and fire its tool there). Give each turn a match_clip (the fixture's name) or "
            "match_text, or see each fixture's committed_turns in its sidecar.")
    if not by_order:
        used = {h.script_turn for h in heard} - {None}
        for i, turn in enumerate(script.turns):
            if (turn.match_clip or turn.match_text) and i not in used:
                what = f"match_clip {turn.match_clip!r}" if turn.match_clip else f"match_text {turn.match_text!r}"
                warnings.append(f"call {view.call_id}: script turn {i + 1} ({what}) never answered: no committed "
                                f"turn was heard as that (heard: {_heard_list(heard)})")
    return warnings


def _splits(heard: list[je.AudioHeard]) -> list[str]:
    """Clips the session heard as more than one committed turn, with the words of each."""
    parts: dict[str, list[str]] = {}
    for h in heard:
        if isinstance(h.clip, str):
            parts.setdefault(h.clip, []).append(str(h.text or ""))
    return [f"{clip} as {' + '.join(repr(t) for t in texts)}" for clip, texts in parts.items() if len(texts) > 1]


def _heard_list(heard: list[je.AudioHeard]) -> str:
    return "; ".join(repr(str(h.text or "")) for h in heard) or "nothing"
