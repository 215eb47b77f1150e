"""The proof of concept (contract §16): pretrain -> train -> evaluate -> report.

    from megacontext.poc import load_poc_config, run_poc, small_config
    run_poc(load_poc_config("configs/poc.toml"), "runs/poc")
"""

from .config import EvalSection, PocConfig, load_poc_config, poc_config_toml, small_config
from .pipeline import STAGES, run_poc
from .report import render_report, write_report

__all__ = ["STAGES", "EvalSection", "PocConfig", "load_poc_config", "poc_config_toml",
           "render_report", "run_poc", "small_config", "write_report"]
