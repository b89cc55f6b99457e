"""Judging answers: the cases, requests and answer assembly, this project's own GLM output parser (the
oracle of the exact faithfulness checks), the tolerant behaviour matchers and verdicts."""
