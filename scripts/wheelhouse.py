"""An offline install bundle: the wheels jaxdl needs that a target image lacks.

    python -m scripts.wheelhouse --python 3.12 --platform manylinux_2_28_x86_64 --have FREEZE_FILE --out DIR
    python -m scripts.wheelhouse --python 3.12 --have jax==0.11.2 jaxlib==0.11.2 flax optax --out DIR

Compute nodes of GPU clusters often have no internet, and their images already
carry JAX with CUDA, PyTorch, flax and optax. This command, run where the
package index is reachable, downloads the wheels of everything jaxdl and its
`test` extra need (read from pyproject.toml at run time) that the target does
not have, at versions compatible with what it has, plus a wheel of jaxdl
itself, and prints the bundle's size. On the target, without network:

    pip install --no-index --find-links DIR -r DIR/requirements.txt     # into the image's (or a venv's) Python
    pip install --no-index --no-deps --target DIR2 DIR/*.whl            # beside it, leaving the image untouched
    export PYTHONPATH=DIR2                                              # ... then put DIR2 on the path

then run `python -m experiments.run ...` from a checkout of the repository
(conf/ is read from there).

`--have` takes a `pip freeze` file of the target (`python -m pip freeze >
have.txt` there) and/or `name==version` pins and bare names; later items
override earlier ones. A bare name is taken to be present at the version pip
would pick for jaxdl; pin it for exact results.

How it works, with pip doing all resolution and downloading: the target's
packages become metadata-only stubs "installed" in an empty virtual
environment (no dependencies of their own: the image is assumed consistent)
and are pinned by a constraints file; `pip install --dry-run --report` in that
environment, binary-only for the target's Python and platform, lists what is
missing; `pip download --no-deps` fetches exactly that. A package published
only as a source archive (omegaconf's antlr4-python3-runtime 4.9.3, TFDS's
promise 2.3) is built into a wheel here first, which works when it is pure
Python (checked: anything else stops with a message).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

REPO = pathlib.Path(__file__).resolve().parents[1]
FREEZE_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?:==\s*([^\s;#]+))?")


def project_requirements(pyproject: pathlib.Path, extras: list[str]) -> tuple[str, str, list[str]]:
    """(name, version, requirement strings) of the project and the chosen extras, from pyproject.toml."""
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r}; it has {sorted(optional)}.")
        requirements += optional[extra]
    return project["name"], project["version"], requirements


def parse_have(items: list[str]) -> dict[str, tuple[str, str | None]]:
    """{canonical name: (name, version or None)} from freeze files, `name==version` pins and bare names."""
    have: dict[str, tuple[str, str | None]] = {}
    for item in items:
        path = pathlib.Path(item)
        lines = path.read_text().splitlines() if path.is_file() else [item]
        for line in lines:
            line = line.strip()
            if not line or line.startswith(("#", "-")):  # comments, -e/-r/--index options of a freeze file
                continue
            match = FREEZE_LINE.match(line)
            if not match:
                raise SystemExit(f"--have: cannot read {line!r} (want name, name==version or a pip freeze file).")
            name, version = match.group(1), match.group(2)
            have[canonicalize_name(name)] = (name, version)  # "name @ file://..." lines give a bare name
    return have


def platforms(platform: str) -> list[str]:
    """The platform tags a manylinux_2_N target accepts, most specific first (pip matches each exactly)."""
    match = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", platform)
    if not match:
        return [platform]
    major, minor, arch = int(match.group(1)), int(match.group(2)), match.group(3)
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags += [f"{legacy[m]}_{arch}" for m in sorted(legacy, reverse=True) if m <= minor and major == 2]
    return tags


def pip(*args: str, log: pathlib.Path | None = None) -> None:
    """Runs `python -m pip ARGS`; on failure prints pip's output and stops."""
    cmd = [sys.executable, "-m", "pip", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if log is not None:
        with log.open("a") as f:
            f.write("$ " + " ".join(cmd) + "\n" + done.stdout + done.stderr + "\n")
    if done.returncode:
        noise = "is ignored: it is neither a file nor a directory"
        shown = "\n".join(line for line in (done.stdout + done.stderr).splitlines() if noise not in line)
        raise SystemExit(f"pip failed ({' '.join(args[:2])} ...):\n{shown[-4000:]}")


def stub_environment(root: pathlib.Path, pins: dict[str, tuple[str, str]]) -> tuple[pathlib.Path, pathlib.Path]:
    """An empty venv whose site-packages holds a metadata-only .dist-info per pin; (its python, site-packages)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = pathlib.Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                       check=True, capture_output=True, text=True).stdout.strip())
    for name, version in pins.values():
        write_stub(site, name, version, f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return python, site


def write_stub(site: pathlib.Path, name: str, version: str, metadata: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(metadata)
    (info / "INSTALLER").write_text("jaxdl-wheelhouse-stub\n")
    (info / "RECORD").write_text("")


def wheel_metadata(spec: str, target: list[str], work: pathlib.Path, log: pathlib.Path) -> str | None:
    """The METADATA of the wheel pip picks for `spec` on the target, or None when it cannot get one."""
    folder = pathlib.Path(tempfile.mkdtemp(dir=work, prefix="metadata-"))
    try:
        pip("download", "--no-deps", "--quiet", *target, "-d", str(folder), spec, log=log)
    except SystemExit:
        return None
    for wheel in folder.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.endswith(".dist-info/METADATA"):
                    return archive.read(member).decode()
    return None


def asked_with_extras(requirements: list[str], resolved: list[dict], pins: dict[str, tuple[str, str]]) -> set[str]:
    """Pinned packages that jaxdl or a package to be installed asks for with extras (`etils[epath]`)."""
    lines = list(requirements)
    for item in resolved:
        lines += item["metadata"].get("requires_dist") or []
    names = (canonicalize_name(r.name) for r in map(Requirement, lines) if r.extras)
    return {name for name in names if name in pins}


def resolve(python: pathlib.Path, requirements: list[str], constraints: pathlib.Path, report: pathlib.Path,
            target: list[str] | None, find_links: pathlib.Path, log: pathlib.Path) -> list[dict]:
    """pip's dry-run install into the stub environment; the report's `install` entries."""
    args = ["--python", str(python), "install", "--dry-run", "--quiet", "--report", str(report),
            "-c", str(constraints), "--find-links", str(find_links)]
    args += target if target is not None else ["--prefer-binary"]
    pip(*args, *requirements, log=log)
    return json.loads(report.read_text())["install"]


def build(requirements: list[str], project: tuple[str, str, list[str]], have: dict[str, tuple[str, str | None]], *,
          python_version: str, platform: str, out: pathlib.Path, work: pathlib.Path,
          omit: frozenset[str] = frozenset()) -> tuple[list[pathlib.Path], dict[str, list[str]]]:
    """Fills `out` with the missing wheels, jaxdl's own wheel and requirements.txt.

    `project` is jaxdl's (name, version, extras). Returns the bundle's wheels
    and, for each package left out by `omit` (canonical names), the packages
    that declare it.
    """
    log = work / "pip.log"
    local = work / "built"  # wheels built here from source-only releases
    local.mkdir()
    target = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for tag in platforms(platform):
        target += ["--platform", tag]

    pins = {k: (n, v) for k, (n, v) in have.items() if v}
    bare = {k for k, (_, v) in have.items() if not v}  # present at a version not given
    constraints = work / "have.txt"
    python, site = stub_environment(work / "env", pins)

    real: dict[str, bool] = {}  # stubs given the real package's metadata (False: none could be read)
    for _ in range(8):
        constraints.write_text("".join(f"{n}=={v}\n" for n, v in pins.values()))
        # Source-only releases: found by a resolution for this interpreter that may use them, built here.
        built = {parse_wheel_filename(w.name)[0] for w in local.glob("*.whl")}
        for item in resolve(python, requirements, constraints, work / "native.json", None, local, log):
            name, version = item["metadata"]["name"], item["metadata"]["version"]
            if not item["download_info"]["url"].endswith(".whl") and canonicalize_name(name) not in built:
                pip("wheel", "--no-deps", "--quiet", "-w", str(local), f"{name}=={version}", log=log)
        for wheel in local.glob("*.whl"):
            if not wheel.name.endswith("-none-any.whl"):
                raise SystemExit(f"{wheel.name} is published only as source and is not pure Python: "
                                 "build it on the target.")
        missing = resolve(python, requirements, constraints, work / "target.json", target, local, log)
        # A bare name that turns up is taken to be present at the version pip picked, and stubbed like a pin
        # (so its own dependencies, which the target has too, are not pulled in).
        present = [i for i in missing if canonicalize_name(i["metadata"]["name"]) in bare]
        for item in present:
            name, version = item["metadata"]["name"], item["metadata"]["version"]
            pins[canonicalize_name(name)] = (name, version)
            write_stub(site, name, version, f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        # A stub declares no extras, so what an extra of a package the target has needs (TFDS asks for
        # etils[enp], which needs einops) is found only once the stub carries that package's real metadata.
        asked = asked_with_extras(requirements, missing, pins) - set(real)
        for key in asked:
            name, version = pins[key]
            metadata = wheel_metadata(f"{name}=={version}", target, work, log)
            real[key] = metadata is not None
            if metadata is not None:
                write_stub(site, name, version, metadata)
        if not present and not asked:
            break
    else:
        raise SystemExit("the resolution did not settle in 8 rounds; see pip.log")
    for key in sorted(k for k, found in real.items() if not found):
        print(f"note: no wheel of {'=='.join(pins[key])} to read its extras from: what they need is not included")
    omitted = {key: [] for key in (canonicalize_name(i["metadata"]["name"]) for i in missing) if key in omit}
    for item in missing:
        for requirement in map(Requirement, item["metadata"].get("requires_dist") or []):
            if canonicalize_name(requirement.name) in omitted and "extra" not in str(requirement.marker or ""):
                omitted[canonicalize_name(requirement.name)].append(item["metadata"]["name"])
    specs = [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in missing
             if canonicalize_name(i["metadata"]["name"]) not in omit]
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):  # one version of each package: pip refuses a folder with two
        old.unlink()
    if specs:
        pip("download", "--no-deps", *target, "--find-links", str(local), "-d", str(out), *specs, log=log)
    pip("wheel", "--no-deps", "--quiet", "-w", str(out), str(REPO), log=log)
    name, version, extras = project
    extras_spec = f"[{','.join(extras)}]" if extras else ""
    how = ("# Install offline: pip install --no-index --find-links THIS_FOLDER -r THIS_FOLDER/requirements.txt\n"
           if not omitted else
           f"# Left out, though declared: {', '.join(sorted(omitted))}. Install offline with --no-deps:\n"
           "# pip install --no-index --no-deps --find-links THIS_FOLDER -r THIS_FOLDER/requirements.txt\n")
    (out / "requirements.txt").write_text(
        how
        + "".join(f"{s}\n" for s in sorted(specs, key=str.lower)) + f"{name}{extras_spec}=={version}\n"
    )
    (out / "have.txt").write_text("# What the target was taken to have (constraints of the resolution)\n"
                                  + constraints.read_text())
    wanted = {canonicalize_name(s.split("==")[0]) for s in specs} | {canonicalize_name(name)}
    return sorted(w for w in out.glob("*.whl") if parse_wheel_filename(w.name)[0] in wanted), omitted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=f"{sys.version_info.major}.{sys.version_info.minor}",
                        help="the target's Python version, e.g. 3.12 (default: this one's)")
    parser.add_argument("--platform", default="manylinux_2_28_x86_64",
                        help="the target's newest platform tag; older manylinux tags are accepted too")
    parser.add_argument("--have", nargs="*", default=[],
                        help="what the target has: pip freeze files, name==version pins, bare names")
    parser.add_argument("--extras", nargs="*", default=["test"], help="jaxdl extras to include (default: test)")
    parser.add_argument("--omit", nargs="*", default=[],
                        help="leave these out although a dependency declares them (e.g. pyarrow: TFDS declares it "
                             "for its Parquet reader, which jaxdl never uses); install then with --no-deps")
    parser.add_argument("--out", type=pathlib.Path, required=True,
                        help="folder of the bundle (created; wheels already in it are replaced)")
    args = parser.parse_args(argv)

    name, version, requirements = project_requirements(REPO / "pyproject.toml", args.extras)
    have = parse_have(args.have)
    have.pop(canonicalize_name(name), None)  # jaxdl comes from its own wheel, never from the image
    with tempfile.TemporaryDirectory(prefix="wheelhouse-") as tmp:
        wheels, omitted = build(requirements, (name, version, args.extras), have, python_version=args.python,
                                platform=args.platform, out=args.out, work=pathlib.Path(tmp),
                                omit=frozenset(map(canonicalize_name, args.omit)))
        shutil.copy(pathlib.Path(tmp) / "pip.log", args.out / "pip.log")
    total = sum(w.stat().st_size for w in wheels)
    for wheel in sorted(wheels, key=lambda w: -w.stat().st_size):
        print(f"{wheel.stat().st_size / 1e6:8.2f} MB  {wheel.name}")
    print(f"bundle: {len(wheels)} wheels, {total / 1e6:.1f} MB ({total / 2**20:.1f} MiB) in {args.out} "
          f"for Python {args.python} on {args.platform}, beside {len(have)} packages the target has")
    for dependency, declared_by in sorted(omitted.items()):
        print(f"left out: {dependency} (declared by {', '.join(declared_by) or 'the project'}); "
              "`pip check` on the target will name it")
    for dependency in sorted(set(map(canonicalize_name, args.omit)) - set(omitted)):
        print(f"--omit {dependency}: not needed anyway")
    no_deps = " --no-deps" if omitted else ""
    print(f"install offline: pip install --no-index{no_deps} --find-links {args.out} -r {args.out}/requirements.txt")
    print(f"  or beside the image's packages: pip install --no-index --no-deps --target DIR2 {args.out}/*.whl; "
          "export PYTHONPATH=DIR2")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
