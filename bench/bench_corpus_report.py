"""The corpus report over the table bench's synthetic corpus: wall time and peak memory.

    .venv/bin/python bench/bench_corpus_report.py --root /tmp/cr --generate              # 10 M clips
    .venv/bin/python bench/bench_corpus_report.py --root /tmp/cr --generate --clips 200000 --batches 40
    .venv/bin/python bench/bench_corpus_report.py --root DIR_WITH_tables/                # an existing corpus

`--generate` writes `videos`, `aesthetic_scores`, `flow_scores` and `matching_scores` with
bench/bench_tables.py's `publish` part (its synthetic rows: 2 % unreadable clips, a few % score
errors; no `near_duplicates`, one source). Then `vidscore_core.curation.corpus_report.build` +
`write` run in a fresh child process, whose VmHWM is the peak memory, over `<root>/tables` with a
scratch VIDSCORE_HOME. The synthetic paths do not exist, so every contact-sheet candidate is an
unreadable clip (skipped with a note): the sheets' cost here is picking clips, not decoding them.
Results go to `<out>.json` and `<out>.md`; the corpus is deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def child(root: str, home: str) -> None:
    """Build and write the report; print one JSON line with the timings and the peak memory."""
    from vidscore_core.curation.corpus_report import build
    from vidscore_core.settings import Settings

    settings = Settings(home=Path(home), tables=root)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    report = build.build(settings, timings=timings)
    t = time.perf_counter()
    paths = build.write(report, settings)
    timings["write"] = round(time.perf_counter() - t, 2)
    corpus = report.numbers.corpus
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "wall_s": round(time.perf_counter() - started, 1),
        "phases_s": timings,
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),  # all threads: the work, whatever the load
        "peak_rss_mib": usage.ru_maxrss // 1024,
        "clips": corpus.clips,
        "signals": [d.signal.column for d in report.numbers.distributions],
        "score_rows": {d.signal.column: d.rows for d in report.numbers.distributions},
        "skipped_sheet_clips": sum(len(s.skipped) for s in report.sheets),
        "html_bytes": paths["html"].stat().st_size,
    }))  # fmt: skip


def generate(args, root: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(REPO / "bench/bench_tables.py"), "--root", str(root), "--parts", "publish", "--keep",
         "--clips", str(args.clips), "--batches", str(args.batches), "--workers", str(args.workers),
         "--out", str(root / "publish")],
        check=True,
    )  # fmt: skip
    return time.perf_counter() - started


def _generated_s(root: Path) -> float:
    """The publish time bench_tables.py recorded for an existing corpus (`--out <root>/publish`), else 0."""
    try:
        return float(json.loads((root / "publish.json").read_text())["publish"]["wall_s"])
    except (OSError, KeyError, ValueError):
        return 0.0


def render(data: dict) -> str:
    r = data["report"]
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in r["phases_s"].items())
    machine = data["machine"]
    return "\n".join([
        f"# Corpus report over {r['clips']:,} clips",
        "",
        f"Machine: {machine['cpu']} × {machine['cores']} cores, {machine['ram_gib']} GiB RAM; DuckDB "
        f"{machine['duckdb']}; commit {machine['commit']}; measured {data['measured_at']}. Other sessions shared "
        f"the machine (load average {data['load_before']} when it started): treat the wall time as an upper bound.",
        "",
        "Command:",
        "",
        f"    {data['command']}",
        "",
        f"Corpus: bench/bench_tables.py's synthetic tables ({', '.join(r['signals'])}; "
        f"{r['clips']:,} clips in {data['batches']:,} batches, generated in {data['generate_s']:.0f} s), "
        "read from Parquet by DuckDB with a 1 GB memory limit.",
        "",
        "| | |",
        "|---|---|",
        f"| wall time (fresh process, build + write) | **{r['wall_s']:.1f} s** |",
        f"| CPU time (user + system, all threads) | **{r['cpu_s']:.0f} s** |",
        f"| phases | {phases} |",
        f"| peak memory (VmHWM of the process) | **{r['peak_rss_mib']:,} MiB** |",
        f"| HTML written | {r['html_bytes'] / 1024:,.0f} KiB |",
        f"| contact-sheet candidates skipped (synthetic paths do not exist) | {r['skipped_sheet_clips']} |",
        "",
    ])  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="folder holding (or to hold) tables/")
    parser.add_argument("--generate", action="store_true", help="write the synthetic corpus first")
    parser.add_argument("--clips", type=int, default=10_000_000)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the corpus")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/corpus-report-cpu-2core")
    args = parser.parse_args()
    from bench.bench_tables import machine_info

    root = args.root.resolve()
    load = os.getloadavg()[0]
    generate_s = generate(args, root) if args.generate else _generated_s(root)
    home = root / "home"
    shutil.rmtree(home, ignore_errors=True)
    try:
        done = subprocess.run([sys.executable, __file__, "_child", str(root / "tables"), str(home)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode:
            sys.exit(f"the report failed:\n{done.stderr[-5000:]}")
        out = done.stdout
    finally:
        if not args.keep:
            shutil.rmtree(root / "tables", ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    data = {
        "command": "python " + " ".join(["bench/bench_corpus_report.py", *sys.argv[1:]]),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_before": round(load, 1),
        "batches": args.batches,
        "generate_s": round(generate_s, 1),
        "machine": machine_info(),
        "report": json.loads(out.strip().splitlines()[-1]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    args.out.with_suffix(".md").write_text(render(data))
    print(render(data))


if __name__ == "__main__":
    main()
