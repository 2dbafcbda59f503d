#!/usr/bin/env python3
"""Lists the third-party packages that CI's cargo commands build with more than
one feature set, each a second compilation of the package and of everything
that depends on it (see crates/sgraf-hack/Cargo.toml).

Needs nightly cargo (`--unit-graph`); compiles nothing. Exit status 1 when a
package has more than one feature set on one side (target or host).
Usage: python3 .ci/feature-sets.py
"""
import collections
import json
import subprocess
import sys

# The cargo commands of .ci/run and of what it runs (the Python package's
# tests: sgraf-cli, xtask, maturin's -p sgraf-python).
COMMANDS = {
    "clippy": ["check", "--workspace", "--all-targets"],
    "clippy-gpu": ["check", "-p", "sgraf-core", "--all-targets", "--features", "gpu,cuda-kernels"],
    "test": ["build", "--workspace", "--all-targets"],
    "cli": ["build", "-p", "sgraf-cli"],
    "xtask": ["build", "-p", "xtask"],
    "python": ["build", "-p", "sgraf-python"],
    "gpu": ["test", "--no-run", "-p", "sgraf-core", "--features", "gpu,cuda-kernels",
            "--lib", "--test", "gpu", "--test", "gpu_cuda"],
    "gpu-cli": ["test", "--no-run", "-p", "sgraf-cli", "--features", "gpu,cuda-kernels",
                "--test", "gpu_cli"],
}


def sets(args):
    out = subprocess.run(
        ["cargo", "+nightly", *args, "--unit-graph", "-Z", "unstable-options"],
        check=True, capture_output=True, text=True,
    ).stdout
    units = json.loads(out)["units"]
    # Dependencies of proc-macros and build scripts are built for the host,
    # with features resolved apart from the target's.
    host, stack = set(), [
        i for i, u in enumerate(units)
        if "proc-macro" in u["target"]["kind"] or u["target"]["kind"] == ["custom-build"]
    ]
    while stack:
        for d in units[stack.pop()]["dependencies"]:
            j = d["index"]
            if j not in host and units[j]["mode"] != "run-custom-build":
                host.add(j)
                stack.append(j)
    found = {}
    for i, u in enumerate(units):
        if u["pkg_id"].startswith("path+file") or u["target"]["kind"] == ["custom-build"]:
            continue
        side = "host" if i in host or "proc-macro" in u["target"]["kind"] else "target"
        found[(u["pkg_id"].split("#")[-1], side)] = ",".join(sorted(u["features"])) or "-"
    return found


def main():
    seen = collections.defaultdict(lambda: collections.defaultdict(list))
    for name, args in COMMANDS.items():
        for key, features in sets(args).items():
            seen[key][features].append(name)
    bad = {k: v for k, v in seen.items() if len(v) > 1}
    for (pkg, side), by_features in sorted(bad.items()):
        print(f"{pkg} ({side})")
        for features, names in by_features.items():
            print(f"    {features}: {' '.join(names)}")
    print(f"{len(bad)} package(s) with more than one feature set")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
