"""Example used by pytest-glm's own tests: holds the server for a while (for kill/interrupt tests)."""

import time


def test_hold(glm_client):
    print("HOLDING", flush=True)
    time.sleep(float(__import__("os").environ.get("GLM_HOLD_SECONDS", "60")))
