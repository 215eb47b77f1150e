"""A port fixture (tests/test_port_workflow.py): the reference implementation re-exported with
ONE deliberately broken public function, `legal_actions`, whose group ids come back as a Python
list instead of an int64 tensor (a typical port slip). The specs that read `group_id` as a
tensor fail with a raw AttributeError, which the spec plumbing reports as the spec rule
violated; xfails.txt beside this file lists exactly those specs."""

import megacontext as _reference
from megacontext import *  # noqa: F403  (the whole public API of contract §4)
from megacontext import __all__  # noqa: F401


def legal_actions(wc, T, cfg):
    expand_ok, group_id = _reference.legal_actions(wc, T, cfg)
    return expand_ok, group_id.tolist()  # the bug: a list, not an int64 tensor
