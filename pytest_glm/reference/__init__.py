"""The embedded default deployment: tiny GLM-architecture models built locally from this package.

They are plumbing fixtures, not language models: they exist so that a real vLLM server, its real GLM
parsers and its real MTP path can be exercised on a machine with no GPU and no model hub.
"""

from pytest_glm.reference.build import ensure_reference_model

__all__ = ["ensure_reference_model"]
