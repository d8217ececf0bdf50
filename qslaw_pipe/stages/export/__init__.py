"""Stage `export`: the fold artifact to a deployable model, by one of the exporters (exports/EXPORTERS).

config.py   export_config: `format` and that exporter's own Config
stage.py    run(cfg, run_dir) -> R/<cfg.stage>/
command.py  `qslaw-pipe export`
"""

from qslaw_pipe.lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {"export_config": "config", "run": "stage", "command": "command"})
__all__ = ["command", "export_config", "run"]
