"""Fine-tuning before the per-site test: any algorithm's model, adapted by each site alone.

FL-bench's "fine-tune before test": after training, site ``c`` takes the model
it would use (its own where the algorithm keeps one, else the global model),
runs ``personal.finetune_steps`` local steps of the client optimizer at
``personal.finetune_lr`` (0 = ``fl.client_lr``, no schedule) on its own
training share (its scanner's images under site skew) and is then tested on its
held-out share: ``summary.json`` ``sites_finetuned``. The batches are seeded by
(seed, the round after the last, site), as a training round's would be; the
model each site starts from is unchanged (the fine-tuned copies are thrown
away after the test).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from fedjax_med import batching, optimizers, types
from fedjax_med.algorithms import local

# fold_in stream of the run's key for the fine-tuning steps.
FINETUNE_STREAM = 0xF1E7


def make_finetune_fn(exp, rounds: int) -> Callable[[types.Params, int], types.Params]:
  """``(params, site) -> params`` after ``exp.config.personal.finetune_steps`` local steps of
  site ``site`` on its own training share (``exp.sites.train``). ``rounds``: the rounds
  trained (the batches use round index ``rounds``, never a training round's).
  """
  config = exp.config
  fl, pe = config.fl, config.personal
  lr = pe.finetune_lr or fl.client_lr
  optimizer = optimizers.client(lr, fl.client_momentum, fl.client_weight_decay, fl.client_opt)
  train = exp.dataset.train
  shares = exp.sites.train

  @jax.jit
  def finetune(params, data, key):
    return local.local_train(exp.loss_fn, optimizer, params, data, key, unroll=1).params

  base_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), FINETUNE_STREAM)

  def fn(params: types.Params, site: int) -> types.Params:
    batch = batching.make_client_batch(
        train.images, train.labels, shares, np.asarray([site], np.int32),
        local_steps=pe.finetune_steps, batch_size=fl.batch_size, seed=config.seed,
        round_idx=rounds)
    data = {"image": batch.image[0], "label": batch.label[0], "mask": batch.mask[0]}
    return finetune(params, data, jax.random.fold_in(base_key, site))

  return fn
