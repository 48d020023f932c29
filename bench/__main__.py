"""``python -m bench [--quick] [--data-dir DIR]``: measure, print a table, write bench/results.json."""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import layout, memory, replay, storage, training
from bench.common import REPO, synthetic_folder
from search.base.files import write_json
from search.learning.data import resolve_data_dir

# (full, quick) sizes: the full run takes about 12 minutes on 2 CPU cores (705 s measured).
SIZES = {
    "matmul": ({"n": 2048, "repeats": 5}, {"n": 1024, "repeats": 3}),
    "throughput": ({"images": 4000, "repeats": 5}, {"images": 640, "repeats": 2}),
    "layout": ({"images": 4000, "seconds": 10, "repeats": 3}, {"images": 640, "seconds": 2, "repeats": 1}),
    "overhead": (
        {"data": {"train_size": 1000, "val_size": 500}, "epochs": 2, "trials": 5},
        {"data": {"train_size": 320, "val_size": 160}, "epochs": 1, "trials": 3},
    ),
    "memory": (
        {"data": {}, "seconds": 8.0, "repeats": 2, "loop_data": {"train_size": 320, "val_size": 160},
         "counts": (5, 30)},
        {"data": {"train_size": 4000, "val_size": 1000}, "seconds": 2.0, "repeats": 1,
         "loop_data": {"train_size": 160, "val_size": 64}, "counts": (2, 6)},
    ),
    "pruning": (
        {"data": {"train_size": 500, "val_size": 500}, "epochs": 20, "trials": 12},
        {"data": {"train_size": 160, "val_size": 64}, "epochs": 2, "trials": 3},
    ),
    "storage": ({"trials": 15, "repeats": 2}, {"trials": 5, "repeats": 1}),
}
FULL_TRIAL_IMAGES = 45_000 * 20
CURVES = REPO / "bench" / "curves" / "cifar10.json"  # recorded with `python -m bench.replay record`


def fmt(figure: dict[str, Any], unit: str = "") -> str:
    return f"{figure['median']:g}{unit} ({figure['min']:g}-{figure['max']:g})"


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(measure, median (min-max), target, met) for the table."""
    t, m = r["throughput"], r["memory"]
    full_trial_s = FULL_TRIAL_IMAGES / t["service_images_per_s"]["median"]
    peak = t["service_gflops"]["median"] / r["matmul"]["gflops"]["median"]
    out = [
        ("1 tutorial code, img/s", fmt(t["tutorial_images_per_s"]), "", ""),
        ("1 service, img/s", fmt(t["service_images_per_s"]), "", ""),
        ("1 service / tutorial", fmt(t["ratio"], "x"), ">= 1.0x", str(t["ratio"]["median"] >= 1.0)),
        ("1 service training GFLOP/s", fmt(t["service_gflops"]), f"{peak:.0%} of matmul", ""),
        ("1 matmul GFLOP/s", fmt(r["matmul"]["gflops"]), "", ""),
        ("1 first-epoch tracing, s", fmt(t["first_epoch_extra_s"]), "", ""),
    ]
    for backend in ("sqlite", "postgresql"):
        o = r["overhead"][backend]
        if "skipped" in o:
            out.append((f"2 overhead/trial, {backend}", o["skipped"], "< 1 s", "skipped"))
            continue
        share = o["overhead_s"]["median"] / full_trial_s
        met = o["overhead_s"]["median"] < 1 and share < 0.02
        out.append((f"2 overhead/trial, {backend}", fmt(o["overhead_s"], " s"),
                    f"< 1 s, < 2% (is {share:.2%} of {full_trial_s / 60:.0f} min)", str(met)))
    loop = m["loop"]
    (n1, rss1), (n2, rss2) = [(k.rsplit("_", 1)[1], v) for k, v in loop.items() if k.startswith("rss_")]
    out += [
        ("3 peak RSS service, MiB", fmt(m["service_peak_mib"]), "", ""),
        ("3 peak RSS tutorial, MiB", fmt(m["tutorial_peak_mib"]), "", ""),
        ("3 peak service / tutorial", fmt(m["peak_ratio"], "x"), "<= 0.6x", str(m["peak_ratio"]["median"] <= 0.6)),
        (f"3 RSS after {n1} / {n2} trials, MiB", f"{rss1:g} / {rss2:g} ({loop['growth_pct']:+g}%)",
         "< 5% growth", str(loop["growth_pct"] < 5)),
    ]
    p = r["pruning"]
    conf, none = p["configured"], p["none"]
    out += [
        ("4 epochs: configured pruner / none", f"{conf['epochs_spent']} / {none['epochs_spent']} "
         f"({conf['pruned']} pruned)", "<= 1/2", str(conf["epochs_spent"] <= none["epochs_spent"] / 2)),
        ("4 best val acc: pruner / none", f"{conf['best_val_accuracy']:.4f} / {none['best_val_accuracy']:.4f}",
         "within 0.01", str(conf["best_val_accuracy"] >= none["best_val_accuracy"] - 0.01)),
    ]
    for backend in ("sqlite", "postgresql"):
        s = r["storage"][backend]
        for key, figure in s.items():
            out.append((f"5 {backend} trials/s, {key.replace('_', ' ')}",
                        figure if isinstance(figure, str) else fmt(figure), "", ""))
    if "replay" in r:  # pruners replayed over recorded curves: epochs spent, top-3 pruned in k/N orders
        out += [(f"6 replay {setting}", f"{fraction} of epochs", "top-3 kept", f"pruned in {k}, gap {gap}")
                for setting, fraction, k, gap in replay.rows(r["replay"])]
    lay = r["layout"]
    out += [(f"7 layout {lay['layouts'][name]}, img/s in all", fmt(lay[f"{name}_images_per_s"]), "", "")
            for name in ("one", "auto", "single")]
    out.append((f"7 auto {lay['layouts']['auto']} / {lay['layouts']['one']}", fmt(lay["ratio"], "x"),
                ">= 1.3x", str(lay["ratio"]["median"] >= 1.3)))
    return out


def table(results: dict[str, Any]) -> str:
    body = rows(results)
    widths = [max(len(row[i]) for row in body + [("measure", "median (min-max)", "target", "met")])
              for i in range(4)]
    lines = [("measure", "median (min-max)", "target", "met"), tuple("-" * w for w in widths), *body]
    return "\n".join("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it works")
    parser.add_argument("--data-dir", help="cifar-10-batches-py folder (else synthetic data)")
    args = parser.parse_args()
    sizes = {name: pair[args.quick] for name, pair in SIZES.items()}
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folder = resolve_data_dir(args.data_dir) if args.data_dir else synthetic_folder(tmp)
        data = f"CIFAR-10 from {folder}" if args.data_dir else "synthetic data of CIFAR-10's shape"
        results: dict[str, Any] = {
            "data": data, "quick": args.quick, "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
            "sizes": sizes,
        }
        print(f"bench on {data}, {os.cpu_count()} CPUs{', quick sizes' if args.quick else ''}", flush=True)
        for name, measure in (
            ("matmul", lambda s: training.matmul_gflops(**s)),
            ("throughput", lambda s: training.throughput(folder, **s)),
            ("layout", lambda s: layout.run(folder, **s)),
            ("overhead", lambda s: training.overheads(folder, tmp, **s)),
            ("memory", lambda s: memory.run(folder, tmp, **s)),
            ("pruning", lambda s: training.pruning(folder, tmp, **s)),
            ("storage", lambda s: storage.run(f"sqlite:///{tmp / 'storage.db'}", **s)),
        ):
            section = time.monotonic()
            results[name] = measure(sizes[name])
            print(f"  {name}: {time.monotonic() - section:.0f} s", flush=True)
    if CURVES.is_file():  # no training: seconds
        results["replay"] = replay.run(replay.load(CURVES))
    results["seconds"] = round(time.monotonic() - start)
    write_json(REPO / "bench" / "results.json", results, indent=1)
    print(table(results))
    print(f"{results['seconds']} s in all; details in bench/results.json")


if __name__ == "__main__":
    main()
