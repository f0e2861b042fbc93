"""`initial_state`: a task's `init_state` compiled as one program, with the state op-by-op init gives."""

import jax
import numpy as np
import optax

from jaxdl.models.rbm import RBM
from jaxdl.models.transformer import Transformer
from jaxdl.tasks.base import RunFacts, initial_state
from jaxdl.tasks.language_model import LanguageModelTask
from jaxdl.tasks.rbm import RBMTask
from tests.conftest import assert_close
from tests.helpers import compilations
from tests.tasks.test_language_model import SMALL, make_batch
from tests.tasks.test_rbm import pattern_data


def test_a_transformer_initialises_in_one_program_to_the_op_by_op_state():
    task = LanguageModelTask(Transformer(**SMALL))
    tx, example, key = optax.adamw(1e-3), make_batch(n=1), jax.random.key(3)
    jax.clear_caches()  # other tests compiled these shapes already
    jitted, compiled = compilations(lambda: jax.block_until_ready(initial_state(task, key, tx, example)))
    jax.clear_caches()
    eager, eager_compiled = compilations(lambda: jax.block_until_ready(task.init_state(key, tx, example)))
    assert compiled == 1 and eager_compiled > 10  # what the function is for
    assert jax.tree.structure(jitted) == jax.tree.structure(eager)
    assert int(jitted.step) == 0 and jitted.tx is tx  # the optimizer stays the caller's
    assert_close((jitted.params, jitted.opt_state), (eager.params, eager.opt_state), rtol=1e-6, atol=1e-7)


def test_a_context_reaches_init_state_as_constants():
    task = RBMTask(RBM(num_hidden=5), persistent=True, num_chains=4)
    data = pattern_data(8)
    context = task.prepare(data, data, RunFacts(batch_size=8, epochs=1)).context
    jitted = initial_state(task, jax.random.key(0), optax.sgd(0.1), {k: v[:1] for k, v in data.items()}, context)
    eager = task.init_state(jax.random.key(0), optax.sgd(0.1), {k: v[:1] for k, v in data.items()}, context)
    np.testing.assert_array_equal(np.asarray(jitted.params["b"]), np.asarray(context.base_bias, np.float32))
    assert_close(jitted.params, eager.params, rtol=1e-6, atol=1e-7)

