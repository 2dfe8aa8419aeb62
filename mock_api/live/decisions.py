"""The fake's Decisions answers: one per configured question, from a model that knows nothing.

A local fake has no Decisions backend, so each answer is the uninformed one: a predicate at
probability 0.5; a choice or a score spread evenly over its options, naming the first (the
``confidence`` is that even share). Usage is zero: no model ran. The shapes are the SDK's
``Decision`` (``openai.types.decision``), so apps parsing answers see every kind.
"""

from __future__ import annotations

from typing import Any

ZERO_USAGE = {"input_tokens": 0, "input_tokens_details": {"cache_write_tokens": 0, "cached_tokens": 0},
              "output_tokens": 0, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 0}


def decide(questions: list[dict[str, Any]], model: str) -> dict[str, Any]:
    return {"answers": [_answer(q) for q in questions], "model": model, "usage": dict(ZERO_USAGE)}


def _answer(question: dict[str, Any]) -> dict[str, Any]:
    name = question.get("name")
    kind = question.get("type")
    if kind == "choice" and question.get("choices"):
        options = question["choices"]
        share = 1.0 / len(options)
        return {"type": "choice", "name": name, "choice": options[0]["value"], "confidence": share,
                "probabilities": [{"value": o["value"], "probability": share} for o in options]}
    if kind == "score" and question.get("levels"):
        levels = question["levels"]
        share = 1.0 / len(levels)
        return {"type": "score", "name": name, "score": 0.0, "confidence": share,
                "probabilities": [{"label": lv["label"], "probability": share, "value": i}
                                  for i, lv in enumerate(levels)]}
    if kind == "predicate":
        return {"type": "predicate", "name": name, "probability": 0.5}
    return {"type": "refusal", "name": name}  # a choice or score with nothing to choose from
