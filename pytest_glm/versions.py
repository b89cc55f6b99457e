"""What differs between the vLLM versions the gate has been run against, so a report can say which version
does what. Every entry was seen here on a real server (the version range is where it was checked, not a
claim about versions never run)."""

from __future__ import annotations

import re
from dataclasses import dataclass


def parse_version(text: str) -> tuple[int, ...]:
    """'0.32.0+cpu' -> (0, 32, 0), '0.26.0rc1' -> (0, 26, 0): the leading numeric release parts."""
    out = []
    for part in text.split("+", 1)[0].split("."):
        lead = re.match(r"\d+", part)
        if lead is None:
            break
        out.append(int(lead.group()))
        if lead.end() != len(part):
            break
    return tuple(out)


@dataclass(frozen=True)
class Behaviour:
    since: tuple[int, ...]
    until: tuple[int, ...] | None  # exclusive; None: still true in the newest version seen
    note: str

    def applies(self, version: tuple[int, ...]) -> bool:
        return bool(version) and version >= self.since and (self.until is None or version < self.until)


KNOWN: tuple[Behaviour, ...] = (
    Behaviour((0, 32), None, "one GLM tool parser for glm45 and glm47 whose structural tag (on by default) "
              "forces GLM-4.7's compact call layout; GLM-4.5/4.6 models are launched with "
              "VLLM_ENFORCE_STRICT_TOOL_CALLING=0"),
    Behaviour((0, 32), None, "assistant messages' reasoning is read from `reasoning`; `reasoning_content` in a "
              "request is ignored (the suites send both)"),
    Behaviour((0, 26), (0, 27), "tool_choice 'required' and named tool choice go through structured outputs and "
              "need lm-format-enforcer installed; without it the request fails with an empty HTTP 500"),
)


def notes_for(version: str) -> list[str]:
    """The known behaviours of this vLLM version (empty for an unknown or unparsable version)."""
    parsed = parse_version(version or "")
    return [b.note for b in KNOWN if b.applies(parsed)]
