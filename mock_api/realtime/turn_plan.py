"""Which script turn answers each committed user turn.

A scenario author writes one script turn per *utterance*; the session commits one user turn per
*VAD segment*, and under the 200 ms ``server_vad`` default an utterance with a pause in it is
committed as two or more turns. Matching by order then fires a turn's tool on the wrong
segment. The rules, in order, for each committed user turn:

1. A script where no turn has ``match_clip`` or ``match_text`` is matched by order: the n-th
   committed turn takes the n-th script turn (past the end: no turn, the defaults answer).
2. Otherwise, the first unused turn whose ``match_clip`` names the clip the recogniser found.
   If the recognition says more of that clip's utterance follows (``ends_utterance`` False),
   the committed turn is only its start: it is answered with ``Script.partial_reply`` and the
   script turn waits for the segment that ends the utterance.
3. Else the first unused turn whose ``match_text`` is in what was heard (case, spacing and
   punctuation ignored).
4. Else the first unused turn with no matcher, in script order.
5. Else no turn: the defaults answer.

A turn is used once. The plan is plain data fed recognitions; the session asks it when it
needs the answer (at the reply at the latest). Turn detection's own reply waits until the turn's
recognition is known (:mod:`.input_buffer`); for any other reply a recognition still running counts
as "nothing recognised". A text user item is matched by its text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from .script import Script, Turn

How = Literal["order", "clip", "text", "unmatched", "partial", "none"]


@dataclass(frozen=True)
class Assignment:
    """The script turn chosen for one committed user turn, and by which rule."""

    index: int  # into Script.turns; -1: no turn
    how: How
    partial: bool = False  # the start of an utterance whose rest is still to come

    def journal(self) -> dict[str, object]:
        return {"turn": self.index if self.index >= 0 else None, "how": self.how, "partial": self.partial}


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@dataclass
class TurnPlan:
    script: Script
    _used: set[int] = field(default_factory=set)
    _order: int = 0  # committed turns so far (rule 1)

    @property
    def by_order(self) -> bool:
        return not any(t.match_clip or t.match_text for t in self.script.turns)

    def assign(self, *, clip: str | None = None, text: str | None = None,
               ends_utterance: bool | None = None) -> Assignment:
        """The script turn for the next committed user turn, from what was heard in it: the recognised
        clip, the words (None: nothing recognised), and whether the clip's utterance ends in it."""
        if self.by_order:
            index, self._order = self._order, self._order + 1
            return Assignment(index if index < len(self.script.turns) else -1, "order")
        turns = self.script.turns
        free = [i for i in range(len(turns)) if i not in self._used]
        if clip:
            for i in free:
                if turns[i].match_clip == clip:
                    if ends_utterance is False:
                        return Assignment(i, "partial", partial=True)
                    return self._use(i, "clip")
        said = _words(text or "")
        for i in free:
            text = turns[i].match_text
            if text and said and _words(text) in said:
                return self._use(i, "text")
        for i in free:
            if not (turns[i].match_clip or turns[i].match_text):
                return self._use(i, "unmatched")
        return Assignment(-1, "none")

    def _use(self, index: int, how: How) -> Assignment:
        self._used.add(index)
        return Assignment(index, how)

    def turn(self, assignment: Assignment | None) -> Turn:
        """The turn an assignment names (an empty turn, so the defaults answer, for none or a partial)."""
        if assignment is None or assignment.partial:
            return Turn()
        return self.script.turn(assignment.index)
