"""The implementation under test, chosen by MEGACONTEXT_IMPL (a module path).

Every spec imports `mc` from here and uses only the public API of contract §4, as the Array API
conformance suite does with its `xp`. Default: the reference implementation.
"""

import importlib
import os

IMPL_NAME = os.environ.get("MEGACONTEXT_IMPL", "megacontext")
mc = importlib.import_module(IMPL_NAME)
