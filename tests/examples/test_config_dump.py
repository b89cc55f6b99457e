"""Example used by pytest-glm's own tests: dump the resolved configuration (no server needed)."""

import json
import os


def test_dump(glm_config):
    with open(os.environ["GLM_EXAMPLE_OUT"], "w") as fh:
        json.dump({
            "model": glm_config.model.model_id if glm_config.model else None,
            "family": glm_config.model.family if glm_config.model else None,
            "profile": glm_config.profile.name, "tp": glm_config.serve.tp, "mtp": glm_config.serve.mtp,
            "extra_args": list(glm_config.serve.extra_args), "startup_timeout": glm_config.startup_timeout,
            "request_timeout": glm_config.request_timeout, "keep_server": glm_config.keep_server,
            "api_key_set": glm_config.api_key is not None, "repr": repr(glm_config),
            "trigger_f1": glm_config.profile.thresholds.tool_trigger_f1,
        }, fh)
