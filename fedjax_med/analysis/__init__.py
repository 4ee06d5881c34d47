"""Analysis of trained models: sharpness, loss landscapes, client drift.

Pure tools over ``loss_fn(params) -> scalar`` and a params pytree (no model,
no config): ``hvp``, ``lanczos``, ``trace``, ``sharpness``, ``landscape``,
``drift``. Glue to flax models and runs: ``objective`` (eval-mode loss on a
fixed subset), ``runs`` (load a workdir), ``report`` (all metrics, compiled
once), ``plots`` (optional matplotlib). The thin CLIs are in the top-level ``analysis/``.
"""

from fedjax_med.analysis import (
  drift,
  hvp,
  lanczos,
  landscape,
  objective,
  plots,
  report,
  runs,
  sharpness,
  trace,
)

__all__ = [
    "drift",
    "hvp",
    "lanczos",
    "landscape",
    "objective",
    "plots",
    "report",
    "runs",
    "sharpness",
    "trace",
]
