"""Analysis of trained models: sharpness, loss landscapes, client drift.

Pure tools over ``loss_fn(params) -> scalar`` and a params pytree (no model,
no config): ``hvp``, ``lanczos``, ``trace``, ``sharpness``, ``landscape``,
``drift``. Glue to flax models and runs: ``objective`` (eval-mode loss on a
fixed subset), ``measures`` (all metrics, compiled once), ``runs`` (load a
workdir: rebuilds the experiment and reads checkpoints, so it loads orbax),
``plots`` (optional matplotlib). The thin CLIs are in the top-level ``analysis/``.

Importing this package (or ``fedjax_med.analysis.hvp``) loads only the pure
tools; ``measures``, ``runs`` and ``plots`` are imported when asked for
(``from fedjax_med.analysis import runs``).
"""

from fedjax_med.analysis import drift, hvp, lanczos, landscape, objective, sharpness, trace

__all__ = ["drift", "hvp", "lanczos", "landscape", "objective", "sharpness", "trace"]
