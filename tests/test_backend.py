"""jaxdl's XLA CPU settings (`jaxdl.backend`): set before JAX starts, same numbers as jaxlib's defaults.

The conversion checks run in fresh processes: XLA reads its flags once per process, and this one's
backend has started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxdl import backend
from tests.conftest import REPO
from tests.helpers import compilations

#: A convolution's forward and weight gradient (what a training step needs of a layer), compiled in a fresh
#: process after `backend.configure()`; prints what is in effect and whether YNNPACK got the convolution.
PROGRAM = """
import json, sys
import numpy as np
from jaxdl import backend
settings = backend.configure()
import jax, jax.numpy as jnp

def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

def step(x, w, dy):
    y, pullback = jax.vjp(lambda w: conv(x, w), w)
    return y, pullback(dy)[0]

rng = np.random.default_rng(0)
x, w, dy = (rng.standard_normal(s).astype(np.float32) for s in ((4, 12, 12, 16), (3, 3, 16, 32), (4, 12, 12, 32)))
compiled = jax.jit(step).lower(x, w, dy).compile()
y, dw = compiled(x, w, dy)
np.savez(sys.argv[1], y=np.asarray(y), dw=np.asarray(dw))
print(json.dumps({**settings, "ynn_fusions": compiled.as_text().count('"__ynn_fusion"')}))
"""


def _run(tmp_path, name: str, program: str = PROGRAM, **env: str) -> tuple[dict, dict]:
    environ = backend.without_additions(os.environ)  # as the user started it
    environ.pop("XLA_FLAGS", None)
    environ.update(env)
    out = tmp_path / f"{name}.npz"
    done = subprocess.run([sys.executable, "-c", program, str(out)], capture_output=True, text=True, cwd=REPO,
                          env=environ, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), dict(np.load(out))


def test_convolutions_leave_ynnpack_with_the_same_numbers_and_the_opt_out_restores_jaxlibs_defaults(tmp_path):
    ours, ours_out = _run(tmp_path, "ours")
    plain, plain_out = _run(tmp_path, "plain", JAXDL_CPU_DEFAULTS="0")
    flag = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
    assert ours["added_by_jaxdl"] == [flag] and flag in ours["xla_flags"] and ours["reason"] == "set by jaxdl"
    assert plain["added_by_jaxdl"] == [] and plain["xla_flags"] == "" and "JAXDL_CPU_DEFAULTS=0" in plain["reason"]
    assert plain["ynn_fusions"] > 0 and ours["ynn_fusions"] == 0  # the flag changes the program it should
    assert ours["release_compiler_memory"] == plain["release_compiler_memory"] == "on"  # independent of the flags
    for name in ("y", "dw"):  # another summation order: equal to float32 rounding
        scale = np.abs(plain_out[name]).max()
        np.testing.assert_allclose(ours_out[name], plain_out[name], rtol=0, atol=1e-5 * scale)


#: The random draws a training step makes (keys split and folded per example, dropout masks, Gaussian noise,
#: Bernoulli binarisation, shuffles), compiled in a fresh process after `backend.configure()`; saves them and
#: prints what is in effect and how many loops the compiled program has.
RANDOM_PROGRAM = """
import json, sys
import numpy as np
from jaxdl import backend
settings = backend.configure()
import jax, jax.numpy as jnp

def draws(key):
    a, b = jax.random.split(key)
    per_example = jax.vmap(lambda i: jax.random.fold_in(b, i))(jnp.arange(100))
    return {
        "keys": jax.random.key_data(per_example),
        "normal": jax.vmap(lambda k: jax.random.normal(k, (50,)))(per_example),
        "uniform": jax.random.uniform(a, (7, 129)),
        "bernoulli": jax.random.bernoulli(a, 0.3, (100, 784)),
        "randint": jax.random.randint(b, (33,), 0, 1000),
        "permutation": jax.random.permutation(a, 1000),
        "raw": jax.random.normal(jax.random.PRNGKey(3), (5, 5)),
    }

compiled = jax.jit(draws).lower(jax.random.key(0)).compile()
np.savez(sys.argv[1], **{k: np.asarray(v) for k, v in compiled(jax.random.key(0)).items()})
print(json.dumps({**settings, "loops": compiled.as_text().count(" while(")}))
"""


def test_random_numbers_are_bit_for_bit_jaxs_without_its_loops_and_the_opt_out_restores_them(tmp_path):
    ours, ours_out = _run(tmp_path, "ours", program=RANDOM_PROGRAM)
    plain, plain_out = _run(tmp_path, "plain", program=RANDOM_PROGRAM, JAXDL_CPU_DEFAULTS="0")
    assert ours["threefry_cpu_lowering"] == "unrolled: set by jaxdl"
    assert plain["threefry_cpu_lowering"] == "rolled: JAXDL_CPU_DEFAULTS=0"
    assert plain["loops"] > 0 and ours["loops"] == 0  # JAX's CPU lowering loops; jaxdl's is straight-line
    assert sorted(ours_out) == sorted(plain_out)
    for name, values in plain_out.items():
        np.testing.assert_array_equal(ours_out[name], values, err_msg=name)


def test_the_users_own_value_of_the_flag_wins(tmp_path):
    mine = "--xla_cpu_experimental_ynn_fusion_type=-individual_dot"
    settings, _ = _run(tmp_path, "mine", XLA_FLAGS=mine)
    assert settings["xla_flags"] == mine and settings["added_by_jaxdl"] == []
    assert settings["reason"] == "set by the user's XLA_FLAGS" and settings["ynn_fusions"] > 0


def test_once_the_backend_has_started_it_is_too_late_and_says_so(monkeypatch):
    import jax

    jax.devices()  # this process's backend has started
    monkeypatch.setattr(backend, "_reason", list(backend._reason))  # this session's record stays as it was
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv(backend.ADDED_VARIABLE, raising=False)
    settings = backend.configure()
    assert settings["added_by_jaxdl"] == [] and "too late" in settings["reason"]
    assert "XLA_FLAGS" not in os.environ


@pytest.mark.parametrize(("flags", "kept"), [
    ("--xla_force_host_platform_device_count=8 --xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
     "--xla_force_host_platform_device_count=8"),
    ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution", None),
])
def test_child_processes_of_other_frameworks_get_the_users_environment_back(flags, kept):
    env = {"XLA_FLAGS": flags, backend.ADDED_VARIABLE: "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
           "OTHER": "1"}
    cleaned = backend.without_additions(env)
    assert cleaned.get("XLA_FLAGS") == kept and backend.ADDED_VARIABLE not in cleaned and cleaned["OTHER"] == "1"
    assert backend.without_additions({"XLA_FLAGS": "--mine"}) == {"XLA_FLAGS": "--mine"}  # nothing added: unchanged


class RecordingLibc:
    def __init__(self):
        self.calls = []

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(pad)
        return 1


def test_every_compilation_hands_the_memory_it_freed_back_to_the_system(monkeypatch):
    import jax

    assert backend.describe()["release_compiler_memory"] == "on"  # conftest configured this process (Linux, glibc)
    libc = RecordingLibc()
    monkeypatch.setattr(backend, "_libc", [libc])
    _, compiled = compilations(
        lambda: jax.jit(lambda x: x * 3.0 + 1.0)(np.arange(7.0, dtype=np.float32)).block_until_ready()  # a new program
    )
    _, none = compilations(lambda: jax.jit(lambda x: x * 3.0 + 1.0))  # no compilation: nothing to hand back
    assert compiled >= 1 and none == 0 and libc.calls == [0] * compiled


def test_releasing_compiler_memory_can_be_turned_off(monkeypatch):
    monkeypatch.setenv(backend.RELEASE_VARIABLE, "0")
    assert backend._register_release() == f"off: {backend.RELEASE_VARIABLE}=0"


HUGE = backend.HUGE_PAGES_TUNABLE


@pytest.mark.parametrize(("environ", "thp_mode", "glibc", "restart", "reason"), [
    ({}, "madvise", (2, 36), True, "on: set by jaxdl at process start"),
    ({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}, "madvise", (2, 36), True, "on: set by jaxdl"),
    ({"GLIBC_TUNABLES": HUGE, backend.ADDED_TUNABLES_VARIABLE: HUGE}, "madvise", (2, 36), False, "on: set by jaxdl"),
    ({"GLIBC_TUNABLES": HUGE}, "madvise", (2, 36), False, "on: the user's GLIBC_TUNABLES"),
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", (2, 36), False, "off: the user's GLIBC_TUNABLES"),
    ({backend.ADDED_TUNABLES_VARIABLE: HUGE}, "madvise", (2, 36), False, "off: GLIBC_TUNABLES lost"),  # no loop
    ({"JAXDL_HUGE_PAGES": "0"}, "madvise", (2, 36), False, "off: JAXDL_HUGE_PAGES=0"),
    ({}, "always", (2, 36), False, "off: the kernel gives huge pages to every large mapping already"),
    ({}, "never", (2, 36), False, "off: the kernel's transparent huge pages are off"),
    ({}, None, (2, 36), False, "off: no transparent huge pages"),
    ({}, "madvise", (2, 34), False, "off: needs glibc 2.35"),
])
def test_a_command_starts_again_with_glibcs_huge_page_tunable_only_where_it_helps(
        environ, thp_mode, glibc, restart, reason):
    env, why = backend.huge_pages({"OTHER": "1", **environ}, thp_mode, glibc)
    assert why.startswith(reason) and (env is not None) == restart
    if restart:  # the user's tunables and environment kept, the tunable and the record of it added
        assert env["GLIBC_TUNABLES"].split(":") == [*filter(None, [environ.get("GLIBC_TUNABLES")]), HUGE]
        assert env[backend.ADDED_TUNABLES_VARIABLE] == HUGE and env["OTHER"] == "1"
        again, why = backend.huge_pages(env, thp_mode, glibc)
        assert again is None and why.startswith(reason)  # once only


def test_other_frameworks_processes_get_the_users_glibc_tunables_back():
    env = {"GLIBC_TUNABLES": f"glibc.pthread.rseq=0:{HUGE}", backend.ADDED_TUNABLES_VARIABLE: HUGE, "OTHER": "1"}
    assert backend.without_additions(env) == {"GLIBC_TUNABLES": "glibc.pthread.rseq=0", "OTHER": "1"}
    assert backend.without_additions({"GLIBC_TUNABLES": HUGE, backend.ADDED_TUNABLES_VARIABLE: HUGE}) == {}
    assert backend.without_additions({"GLIBC_TUNABLES": HUGE}) == {"GLIBC_TUNABLES": HUGE}  # the user's own


#: Starts again through `restart_with_huge_pages` (the kernel's mode taken as `madvise` when the test says so),
#: then counts the page faults of filling a fresh 64 MB block from glibc's malloc (over its mmap threshold, so
#: mapped fresh; numpy's own arrays would not do: numpy asks for huge pages itself).
RESTART = """
import ctypes, json, os, resource, sys
from jaxdl import backend
if sys.argv[1] == "madvise":
    backend._thp_mode = lambda: "madvise"
print(json.dumps({"started": os.getpid()}), flush=True)
backend.restart_with_huge_pages()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
ctypes.memset(libc.malloc(64 << 20), 1, 64 << 20)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"pid": os.getpid(), "argv": sys.argv[1:], "faults": faults, **backend.describe()}))
"""


def _restart(mode: str, **env: str) -> tuple[list[dict], dict]:
    environ = {**backend.without_additions(os.environ), **env}
    done = subprocess.run([sys.executable, "-c", RESTART, mode, "two words"], capture_output=True, text=True,
                          cwd=REPO, env=environ, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.strip().splitlines()]
    return lines[:-1], lines[-1]


def test_the_command_starts_again_in_place_with_its_arguments_and_records_it():
    starts, result = _restart("madvise")
    assert [s["started"] for s in starts] == [result["pid"]] * 2  # started twice, as the same process
    assert result["argv"] == ["madvise", "two words"]
    assert result["huge_pages"] == "on: set by jaxdl at process start" and HUGE in result["glibc_tunables"].split(":")
    starts, result = _restart("madvise", JAXDL_HUGE_PAGES="0")
    assert len(starts) == 1 and result["huge_pages"] == "off: JAXDL_HUGE_PAGES=0" and result["glibc_tunables"] == ""


@pytest.mark.skipif(backend._thp_mode() != "madvise" or (backend._glibc_version() or ()) < (2, 35),
                    reason="needs Linux transparent huge pages in madvise mode and glibc >= 2.35")
def test_with_the_tunable_a_fresh_block_faults_in_huge_pages():
    _, on = _restart("system")
    _, off = _restart("system", JAXDL_HUGE_PAGES="0")
    assert on["huge_pages"].startswith("on") and off["huge_pages"].startswith("off")
    assert off["faults"] > 15_000  # 64 MB in 4 KB pages: 16,384
    assert on["faults"] < 1_000  # in 2 MB pages: 32, and a few small ones
