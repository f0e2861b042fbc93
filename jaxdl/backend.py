"""The XLA CPU settings jaxdl chooses, set in this process before JAX starts its backends, and how the
process gives back the memory XLA's compiler frees.

One XLA setting, measured on a 2-core x86 CPU with jaxlib 0.10 (the figures: benchmarks/RESULTS.md,
"Before and after" and "Convolutions"):

`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution` leaves convolutions to XLA's own
(Eigen) kernels instead of YNNPACK, which jaxlib 0.10 uses by default. YNNPACK's convolutions ran on one
core there (CPU time equal to wall time) while XLA's use every core, so convolutional models train
faster; models without convolutions compile to the same program. The results agree with YNNPACK's to
float32 rounding (`tests/test_backend.py`); digits of a trained convolutional network can differ in the
last places, as between any two summation orders. Taking dots away from YNNPACK too was measured and
not chosen: no model got faster and the smallest got slower.

The setting is an `--xla_cpu_` flag, read only by XLA's CPU compiler, so it never reaches a GPU or
TPU program. It is added to `XLA_FLAGS` only:

* for jaxlib versions it was measured on (`TESTED_JAXLIB`): XLA aborts the process on a flag it does
  not know, so on other versions nothing is added and `describe()` says why;
* when the user's `XLA_FLAGS` does not set the same flag (theirs wins);
* unless `JAXDL_CPU_DEFAULTS=0` (the plain jaxlib defaults, e.g. to compare);
* before JAX has started a backend (XLA reads its flags once per process); later it is too late, and
  `describe()` says so.

JAX lowers its Threefry-2x32 hash (every `jax.random` call: keys, dropout masks, noise) for the CPU as a
5-iteration loop of 4 rounds, to save compile time, and for GPU and TPU as straight-line code. On the CPU
the loop costs more than it saves: each iteration is a separate kernel launch that copies the loop's state
(an MLP-VAE step at batch 100 compiled to 6 such loops; with their copies, 257 a step, they took about 1 ms
of 5 ms). `configure` registers JAX's own straight-line lowering for the CPU too (registering it again
changes nothing), for the JAX versions it was measured on (`TESTED_JAX`; it uses a private JAX module, so
other versions keep JAX's lowering and `describe()` says why), unless `JAXDL_CPU_DEFAULTS=0`. The hash is the same integer arithmetic in the same order, so every random number is
bit for bit what JAX's loop gives (`tests/test_backend.py`); only the compiled program changes
(benchmarks/RESULTS.md, "Before and after", change 8).

Compiling a program makes XLA's compiler allocate and free tens of megabytes (LLVM's modules and
passes). glibc's allocator keeps freed memory that is not at the top of its heap, so each compilation
left the process larger: 90-110 MB of a 300-step `experiment=shakespeare_char_cpu` run's 700 MB peak
(benchmarks/RESULTS.md, "End to end"). `configure` therefore registers a `jax.monitoring` listener
that calls glibc's `malloc_trim(0)` after every compilation, which returns the free pages to the
system; nothing else changes, and a compilation takes under a millisecond longer. It is on wherever
the C library is glibc (Linux), off with `JAXDL_RELEASE_COMPILER_MEMORY=0`.

XLA's CPU runtime allocates each execution's temporary buffers in one block and frees it at the end.
A block over glibc's 32 MB ceiling is mapped fresh from the system every time, and the kernel faults it
in 4 KB page by page: the Transformer of `experiment=shakespeare_char_cpu` needs 51 MB of temporaries,
13,600 page faults and 10-15 ms of a 50 ms step. Transparent huge pages fault the same memory in 2 MB
at a time. Where the kernel gives them only to memory that asks (`madvise`, the usual default), glibc
asks for every block it maps when its tunable `glibc.malloc.hugetlb=1` is set (glibc >= 2.35), and it
reads its tunables once, when a process starts. `restart_with_huge_pages` therefore starts the command
again, at once and with the same process id, with that tunable in `GLIBC_TUNABLES`; `python -m
experiments.run` and `scripts.benchmark` call it before importing anything else. The step above then
took 360 page faults and ran about 20 % faster; a whole run peaked 14-20 MB higher (benchmarks/RESULTS.md,
"End to end", change 6). It is off with `JAXDL_HUGE_PAGES=0`, when `GLIBC_TUNABLES` already sets the
tunable (the user's value wins), and where the kernel's mode is `always` (already huge) or `never`.

Every run records `describe()` in its manifest.json ("built" -> "backend").
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping
from typing import Any

#: XLA CPU flags jaxdl sets, with their values (why: the module docstring).
CPU_XLA_FLAGS: dict[str, str] = {"--xla_cpu_experimental_ynn_fusion_type": "-individual_convolution"}
#: jaxlib versions (major.minor prefixes) the flags are known to exist in and were measured on.
TESTED_JAXLIB: tuple[str, ...] = ("0.10.",)
#: jax versions (major.minor prefixes) whose CPU lowering of the Threefry hash jaxdl replaces.
TESTED_JAX: tuple[str, ...] = ("0.10.",)
#: Set to 0 to leave XLA's CPU settings and JAX's CPU lowerings at their defaults.
OPT_OUT_VARIABLE = "JAXDL_CPU_DEFAULTS"
#: What `configure` added to XLA_FLAGS, so that child processes of other frameworks can take it back out.
ADDED_VARIABLE = "JAXDL_ADDED_XLA_FLAGS"

#: Set to 0 to leave the memory XLA's compiler frees inside the process (glibc's default).
RELEASE_VARIABLE = "JAXDL_RELEASE_COMPILER_MEMORY"
#: The `jax.monitoring` event JAX records when a backend compilation ends.
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"

#: The glibc tunable `restart_with_huge_pages` adds to GLIBC_TUNABLES (see the module docstring).
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
#: Set to 0 to start without it.
HUGE_PAGES_VARIABLE = "JAXDL_HUGE_PAGES"
#: Set by `restart_with_huge_pages` in the restarted process: what it added to GLIBC_TUNABLES.
ADDED_TUNABLES_VARIABLE = "JAXDL_ADDED_GLIBC_TUNABLES"
#: Where Linux says when it gives transparent huge pages ("always [madvise] never").
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"

_reason: list[str] = []  # why this process's flags are what they are, once `configure` has run
_release: list[str] = []  # whether compiler memory is released, and why, once `configure` has run
_threefry: list[str] = []  # how the Threefry hash is lowered for the CPU, and why, once `configure` has run
_libc: list[Any] = []  # glibc, once the listener is registered


def _opted_out(variable: str, environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get(variable, "1").strip().lower() in ("0", "false", "no", "off")


def _release_freed_memory(event: str, duration_s: float, **kwargs: Any) -> None:
    """`jax.monitoring` listener: after a compilation, glibc returns the pages freed since to the system."""
    del duration_s, kwargs
    if event == COMPILE_EVENT and _libc:
        _libc[0].malloc_trim(0)


def _glibc_version() -> tuple[int, ...] | None:
    """The running glibc's (major, minor) version, or None for another C library.

    Asked of the C library itself (`confstr`), not read from the interpreter's binary as `platform.libc_ver`
    does, which gives the oldest glibc the binary was built for.
    """
    try:
        name, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").split()
    except (AttributeError, ValueError, OSError):  # no confstr (Windows), not "glibc X.Y" (musl, macOS)
        return None
    if name != "glibc":
        return None
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def _register_release() -> str:
    """Registers `_release_freed_memory` once per process; returns what is in effect and why."""
    if _opted_out(RELEASE_VARIABLE):
        return f"off: {RELEASE_VARIABLE}={os.environ[RELEASE_VARIABLE]}"
    if _libc:
        return "on"
    if _glibc_version() is None:
        return "off: the C library is not glibc"
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return "off: glibc's malloc_trim is not available"
    import jax.monitoring

    _libc.append(libc)
    jax.monitoring.register_event_duration_secs_listener(_release_freed_memory)
    return "on"


def _lower_threefry_unrolled() -> str:
    """Registers JAX's straight-line Threefry-2x32 lowering for the CPU (see the module docstring).

    Returns:
      What is in effect: "unrolled: set by jaxdl", or "rolled: " and why JAX's own CPU lowering stays.
    """
    if _opted_out(OPT_OUT_VARIABLE):
        return f"rolled: {OPT_OUT_VARIABLE}={os.environ[OPT_OUT_VARIABLE]}"
    import jax

    if not jax.__version__.startswith(TESTED_JAX):
        return f"rolled: jax {jax.__version__} is not among the measured versions {TESTED_JAX}"
    try:
        from jax._src.random import threefry2x32
        from jax.interpreters import mlir

        primitive, rule = threefry2x32.threefry2x32_p, threefry2x32._threefry2x32_lowering_rule
    except (ImportError, AttributeError):
        return f"rolled: jax {jax.__version__} has no straight-line lowering where jaxdl looks for it"
    mlir.register_lowering(primitive, rule, platform="cpu", inline=False)  # as JAX registers it for GPU and TPU
    return "unrolled: set by jaxdl"


def _thp_mode() -> str | None:
    """The kernel's transparent-huge-page mode ("always", "madvise", "never"), or None where it has none."""
    try:
        with open(THP_MODE_FILE) as f:
            text = f.read()
    except OSError:
        return None
    return text[text.index("[") + 1:text.index("]")] if "[" in text and "]" in text else None


def huge_pages(environ: Mapping[str, str], thp_mode: str | None,
               glibc: tuple[int, ...] | None) -> tuple[dict[str, str] | None, str]:
    """Whether a process should start again with `HUGE_PAGES_TUNABLE`, and why.

    Args:
      environ: the process's environment.
      thp_mode: the kernel's transparent-huge-page mode (`_thp_mode()`), None where it has none.
      glibc: glibc's (major, minor) version (`_glibc_version()`), None for another C library.

    Returns:
      (the environment to start again with, or None to go on as is; what is in effect and why). The reason
      starts with "on" or "off".
    """
    tunables = [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t]
    value = next((t for t in tunables if t.startswith("glibc.malloc.hugetlb=")), None)
    if value is not None:
        if value == HUGE_PAGES_TUNABLE and value in environ.get(ADDED_TUNABLES_VARIABLE, "").split(":"):
            return None, "on: set by jaxdl at process start"
        return None, f"{'on' if value == HUGE_PAGES_TUNABLE else 'off'}: the user's GLIBC_TUNABLES ({value})"
    if environ.get(ADDED_TUNABLES_VARIABLE):  # restarted once already and the tunable was taken out since: no loop
        return None, "off: GLIBC_TUNABLES lost the tunable after the restart"
    if _opted_out(HUGE_PAGES_VARIABLE, environ):
        return None, f"off: {HUGE_PAGES_VARIABLE}={environ[HUGE_PAGES_VARIABLE]}"
    if glibc is None or glibc < (2, 35):
        return None, "off: needs glibc 2.35 or later"
    if thp_mode != "madvise":
        why = {"always": "the kernel gives huge pages to every large mapping already",
               "never": "the kernel's transparent huge pages are off"}.get(thp_mode, "no transparent huge pages")
        return None, f"off: {why}"
    env = dict(environ)
    env["GLIBC_TUNABLES"] = ":".join([*tunables, HUGE_PAGES_TUNABLE])
    env[ADDED_TUNABLES_VARIABLE] = HUGE_PAGES_TUNABLE
    return env, "on: set by jaxdl at process start"


def restart_with_huge_pages() -> None:
    """Starts this command again, in place (`os.execve`: same process id), with `HUGE_PAGES_TUNABLE` set,
    where `huge_pages` says so; otherwise returns and changes nothing.

    Call it first thing in a command's `__main__`, before anything starts threads or spends time: the
    interpreter starts over from the same command line (`sys.orig_argv`), and glibc reads the tunable then.
    """
    env, _ = huge_pages(os.environ, _thp_mode(), _glibc_version())
    if env is None or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:  # the interpreter cannot be started again: go on without the tunable (describe() says off)
        return


def _backends_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
    except ImportError:  # a JAX without the private module: assume the worst
        return True
    return bool(getattr(xla_bridge, "_backends", {}))


def _jaxlib_version() -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("jaxlib")
    except (ImportError, PackageNotFoundError):
        return None


def configure() -> dict[str, Any]:
    """Adds jaxdl's XLA CPU flags (`CPU_XLA_FLAGS`) to `XLA_FLAGS`, where that is safe and still in time,
    lowers JAX's Threefry hash for the CPU as straight-line code, and has glibc return the memory each
    compilation frees (see the module docstring).

    Call it before anything computes with JAX; calling it again changes nothing. A child process
    inherits the flags and the record of what jaxdl added (`ADDED_VARIABLE`).

    Returns:
      `describe()`: what is in effect and why.
    """
    env = os.environ
    flags = env.get("XLA_FLAGS", "").split()
    ours = env.get(ADDED_VARIABLE, "").split()
    missing = [
        f"{flag}={value}" for flag, value in CPU_XLA_FLAGS.items()
        if not any(f == flag or f.startswith(flag + "=") for f in flags)
    ]
    if _opted_out(OPT_OUT_VARIABLE):
        reason = f"{OPT_OUT_VARIABLE}={env[OPT_OUT_VARIABLE]}: jaxlib's defaults"
    elif not (_jaxlib_version() or "").startswith(TESTED_JAXLIB):
        reason = f"jaxlib {_jaxlib_version()} is not among the measured versions {TESTED_JAXLIB}: jaxlib's defaults"
    elif not missing:
        reason = "set by jaxdl" if ours else "set by the user's XLA_FLAGS"
    elif _backends_started():
        reason = "JAX had already started its backends: too late to set XLA flags in this process"
    else:
        env["XLA_FLAGS"] = " ".join([*flags, *missing])
        env[ADDED_VARIABLE] = " ".join([*ours, *missing])
        reason = "set by jaxdl"
    _reason[:] = [reason]
    _release[:] = [_register_release()]
    _threefry[:] = [_lower_threefry_unrolled()]
    return describe()


def describe() -> dict[str, Any]:
    """What this process runs with.

    Returns:
      {"xla_flags": XLA_FLAGS as it is now, "added_by_jaxdl": the flags jaxdl added (list of str),
      "reason": why (or "not configured" before `configure` ran), "release_compiler_memory": "on",
      or "off: " and why (or "not configured"), "huge_pages": "on: " or "off: " and why (`huge_pages`),
      "glibc_tunables": GLIBC_TUNABLES as the process started with it, "threefry_cpu_lowering":
      "unrolled: set by jaxdl", or "rolled: " and why (or "not configured")}.
    """
    return {
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "added_by_jaxdl": os.environ.get(ADDED_VARIABLE, "").split(),
        "reason": _reason[0] if _reason else "not configured",
        "release_compiler_memory": _release[0] if _release else "not configured",
        "huge_pages": _huge_pages_in_effect(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "threefry_cpu_lowering": _threefry[0] if _threefry else "not configured",
    }


def _huge_pages_in_effect() -> str:
    env, reason = huge_pages(os.environ, _thp_mode(), _glibc_version())
    if env is not None:  # it would restart: this process did not start with the tunable
        return f"off: set only at process start (by `python -m experiments.run`, or {HUGE_PAGES_TUNABLE} in GLIBC_TUNABLES)"
    return reason


def without_additions(environ: dict[str, str]) -> dict[str, str]:
    """`environ` without what jaxdl added for itself: the flags `configure` added to XLA_FLAGS and the tunable
    `restart_with_huge_pages` added to GLIBC_TUNABLES (for another framework's process).

    A peer framework in a child process (PyTorch, Keras) inherits this process's environment; this gives
    it the environment its user had, so that it runs at its own defaults.
    """
    env = dict(environ)
    for variable, added_by, separator in (("XLA_FLAGS", ADDED_VARIABLE, None),
                                          ("GLIBC_TUNABLES", ADDED_TUNABLES_VARIABLE, ":")):
        added = [f for f in env.pop(added_by, "").split(separator) if f]
        if added:
            kept = [f for f in env.get(variable, "").split(separator) if f and f not in added]
            if kept:
                env[variable] = (separator or " ").join(kept)
            else:
                env.pop(variable, None)
    return env
