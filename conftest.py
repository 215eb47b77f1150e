"""Root pytest configuration shared by spec/, tests/ and benchmarks/.

Hypothesis profiles (contract §2: seeds explicit, derandomized in CI and in port runs):
  ci        derandomized, 50 examples, no example database
  dev       random, 30 examples
  thorough  derandomized, 1000 examples (nightly / before a release)
Choose with `--hypothesis-profile NAME` or MEGACONTEXT_HYPOTHESIS_PROFILE=NAME. Otherwise the
profile is `ci` when CI is set or when the run tests a port (MEGACONTEXT_IMPL or
MEGACONTEXT_IMPL_PATH set, or `--xfails-file` given), so a port's xfails list is stable; `dev`
elsewhere.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("ci", derandomize=True, max_examples=50, database=None, **_common)
settings.register_profile("dev", max_examples=30, **_common)
settings.register_profile("thorough", derandomize=True, max_examples=1000, database=None,
                          **_common)


def default_profile(config) -> str:
    """The profile a run gets without `--hypothesis-profile` (see the module docstring)."""
    if os.environ.get("MEGACONTEXT_HYPOTHESIS_PROFILE"):
        return os.environ["MEGACONTEXT_HYPOTHESIS_PROFILE"]
    port_run = (os.environ.get("MEGACONTEXT_IMPL") or os.environ.get("MEGACONTEXT_IMPL_PATH")
                or config.getoption("--xfails-file"))
    return "ci" if os.environ.get("CI") or port_run else "dev"


def pytest_configure(config):
    if not config.getoption("--hypothesis-profile"):  # given: the hypothesis plugin loads it
        settings.load_profile(default_profile(config))
    # Under `pytest -n auto` every xdist worker already owns a core; torch's own intra-op
    # threads on top oversubscribe the machine and small ops then wait milliseconds for thread
    # wake-ups. The perf gates (`--benchmark-only`, no xdist) keep torch's default threads.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny tensor ops: with several threads each op pays an OpenMP wake-up that
    on a busy 2-core machine costs more than the work. Use with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_addoption(parser):
    parser.addoption(
        "--xfails-file",
        action="store",
        default=None,
        help="a port's file of known failures: spec test ids (strict xfails; a trailing * "
        "makes a prefix) and `unimplemented: <topic or public name>` lines; format in "
        "spec/xfails.py",
    )
