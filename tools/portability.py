r"""Run the notebooks as other machines would: other CPU kernels, thread counts, seeds, and oneDNN off.

A notebook's asserts must hold on any student's machine. PyTorch picks its CPU kernels by the processor
(``ATEN_CPU_CAPABILITY=default`` means no vector extensions, ``avx2``, ``avx512``), and the kernel set, the thread
count (``OMP_NUM_THREADS``) and oneDNN (``torch.backends.mkldnn.enabled``) change floating-point summation orders
the way another computer does; ``COURSE_SEED`` draws other random numbers. This script executes every lecture
notebook and every exercise master under nbval in a covering set of settings and prints a table
notebook x setting -> pass/FAIL and seconds.

    python tools/portability.py                      # the whole matrix (make test-portability)
    python tools/portability.py --setting ci         # one non-default setting (what .ci/run adds)
    python tools/portability.py notebooks/Q2*.ipynb  # some notebooks only

Every value of each axis appears with every notebook, and each notebook runs under all five seeds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Setting:
    name: str
    seed: int
    aten: str | None  # None: the machine's own kernel set
    threads: int
    mkldnn: bool = True

    def env(self, site_dir: Path) -> dict[str, str]:
        env = dict(os.environ, COURSE_SEED=str(self.seed), OMP_NUM_THREADS=str(self.threads), MPLBACKEND="Agg")
        # Threads that sleep instead of spinning while they wait: the same arithmetic, but two notebooks at once
        # on two cores no longer slow each other down twentyfold.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        env.pop("ATEN_CPU_CAPABILITY", None)
        if self.aten:
            env["ATEN_CPU_CAPABILITY"] = self.aten
        if not self.mkldnn:  # sitecustomize runs in every Python process of that run, the kernels included
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site_dir), env.get("PYTHONPATH", "")]))
        return env

    def describe(self) -> str:
        parts = [f"seed {self.seed}", f"cpu {self.aten or 'native'}", f"{self.threads} thr"]
        return ", ".join(parts + ([] if self.mkldnn else ["mkldnn off"]))


# A covering design: seeds 0-4 once each; kernel sets native/default/avx2; 1 and 2 threads; oneDNN on and off.
MATRIX = [
    Setting("s0", 0, None, 1),
    Setting("s1", 1, "default", 2),
    Setting("s2", 2, "avx2", 1, mkldnn=False),
    Setting("s3", 3, "default", 1),
    Setting("s4", 4, None, 2, mkldnn=False),
]
CI_SETTING = Setting("ci", 3, "default", 2)


def default_notebooks() -> list[Path]:
    return sorted(ROOT.glob("notebooks/Q*.ipynb")) + sorted(ROOT.glob("solutions/Q*/*.ipynb"))


def run_one(notebook: Path, setting: Setting, site_dir: Path, log_dir: Path) -> tuple[bool, float]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
           "--nbval-cell-timeout=600", str(notebook)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=setting.env(site_dir), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    log = log_dir / f"{notebook.stem}.{setting.name}.log"
    log.write_text(proc.stdout + proc.stderr)
    return proc.returncode == 0, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/Q*.ipynb and solutions/")
    parser.add_argument("--setting", action="append", help="run only these settings (s0..s4, ci)")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks executed at once (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "portability",
                        help="logs and results.json (default artifacts/portability)")
    args = parser.parse_args(argv)

    known = {s.name: s for s in MATRIX + [CI_SETTING]}
    try:
        settings = [known[name] for name in args.setting] if args.setting else MATRIX
    except KeyError as e:
        parser.error(f"unknown setting {e.args[0]!r}; expected one of {', '.join(known)}")
    notebooks = [p.resolve() for p in args.notebooks] or default_notebooks()
    missing = [str(p) for p in notebooks if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")

    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(nb, s) for nb in notebooks for s in settings]
    print(f"{len(jobs)} runs: {len(notebooks)} notebooks x {len(settings)} settings, {args.jobs} at a time")
    for s in settings:
        print(f"  {s.name}: {s.describe()}")
    results: dict[tuple[Path, str], tuple[bool, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        site_dir = Path(tmp)
        (site_dir / "sitecustomize.py").write_text("import torch\ntorch.backends.mkldnn.enabled = False\n")

        def work(job: tuple[Path, Setting]) -> None:
            nb, s = job
            ok, seconds = run_one(nb, s, site_dir, args.out)
            results[nb, s.name] = ok, seconds
            done = len(results)
            print(f"[{done:3d}/{len(jobs)}] {'pass' if ok else 'FAIL'} {seconds:6.1f} s  {s.name}  "
                  f"{nb.relative_to(ROOT)}", flush=True)

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(work, jobs))

    width = max(len(str(nb.relative_to(ROOT))) for nb in notebooks)
    header = f"{'notebook':<{width}} | " + " | ".join(f"{s.name:^11s}" for s in settings)
    print("\n" + header + "\n" + "-" * len(header))
    for nb in notebooks:
        cells = []
        for s in settings:
            ok, seconds = results[nb, s.name]
            cells.append(f"{'pass' if ok else 'FAIL'} {seconds:5.0f}s")
        print(f"{str(nb.relative_to(ROOT)):<{width}} | " + " | ".join(f"{c:^11s}" for c in cells))
    for s in settings:
        print(f"{s.name}: {s.describe()}")
    failed = [(nb, name) for (nb, name), (ok, _) in results.items() if not ok]
    (args.out / "results.json").write_text(json.dumps(
        [{"notebook": str(nb.relative_to(ROOT)), "setting": name, "passed": ok, "seconds": round(sec, 1)}
         for (nb, name), (ok, sec) in sorted(results.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))], indent=1))
    where = f"  (logs in {args.out})" if failed else ""
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed{where}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
