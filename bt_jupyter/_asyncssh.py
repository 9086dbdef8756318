"""asyncssh, imported without the warnings its import raises in a user's notebook.

cryptography 51 deprecates DSA and warns when a module reads ``dsa.DSAPrivateKey``;
asyncssh does so at import time (its type aliases), five warnings for a feature we never
use (our keys are Ed25519, the stand-in's certificates ECDSA). Every module of ours that
needs asyncssh imports it from here, so a ``%bt_session`` cell prints none of them. The
test suite names the same filter in pyproject.toml.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh\.")
    import asyncssh

__all__ = ["asyncssh"]
