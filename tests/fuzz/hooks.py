"""Schemathesis hooks for the OpenAPI fuzz run (loaded through ``SCHEMATHESIS_HOOKS``).

The fuzzer signs in with an admin's token and may call anything that admin may call, including
the operations that would lock it out halfway through the run: changing its own role, disabling
itself, revoking its own token. Such a request is sent against a decoy user or token instead, so
the whole run keeps testing as an admin. The decoy's name and token id come from the test.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

FUZZER = os.environ.get("CALLBRIDGE_FUZZ_USER", "fuzzer")
FUZZER_TOKEN_ID = os.environ.get("CALLBRIDGE_FUZZ_TOKEN_ID", "")
DECOY = os.environ.get("CALLBRIDGE_FUZZ_DECOY_USER", "decoy")
DECOY_TOKEN_ID = os.environ.get("CALLBRIDGE_FUZZ_DECOY_TOKEN_ID", "")


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    params = case.path_parameters
    if not params:
        return
    if case.path.startswith("/api/v1/users/") and str(params.get("name", "")).lower() == FUZZER:
        params["name"] = DECOY
    if case.path.startswith("/api/v1/tokens/") and str(params.get("token_id", "")) == FUZZER_TOKEN_ID:
        params["token_id"] = DECOY_TOKEN_ID
