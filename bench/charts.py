"""Charts (SVG) from benchmark results files, never drawn by hand.

    python bench/charts.py RESULTS.json [--model MODEL.json] [--out docs/charts]

RESULTS.json is what `bench/run.py --json` wrote; MODEL.json what
`bench/fleet_model.py --json` wrote. Each chart is drawn from the sections the
files hold, the others are skipped:

- s3-bytes-per-blob.svg: S3 bytes per blob byte against clients (cold storms)
- storm-seconds.svg: a cold storm's time against clients
- fleet-scale.svg: origin reads per blob and the busiest host's upload against
  fleet size (the scale model, with the measured hosts marked)
- cold-pull.svg: a cold pull against its floors (cold layers, ranged fill)
- lazy.svg: a lazy puller's footer, table of contents and chunks against the
  bare client

Needs matplotlib (`pip install '.[charts]'`); bench/run.py --charts DIR calls it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("svg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["write_charts"]

# One colour per contender, the same in every chart.
_COLOURS = {
    "registry-local": "#1b7837",
    "registry:2 on S3": "#b2182b",
    "registry:2 proxy": "#ef8a62",
    "bare client": "#4d4d4d",
}


_PART_COLOURS = ("#92c5de", "#2166ac", "#1b7837", "#762a83")  # staged part sizes, small first


def _figure(title: str, panels: int = 1) -> tuple[Figure, list[Axes]]:
    figure, axes = plt.subplots(1, panels, figsize=(5.2 * panels if panels > 1 else 6.4, 3.8))
    figure.suptitle(title, fontsize=11)
    return figure, list(axes) if panels > 1 else [axes]


def _save(figure: Figure, path: Path, note: str) -> Path:
    figure.text(0.01, 0.01, note, fontsize=7, color="#666666")
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(path, metadata={"Date": None})
    plt.close(figure)
    return path


def _clients(results: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return sorted((int(n), row) for n, row in results["cold"].items())


def _by_contender(
    rows: list[tuple[int, dict[str, Any]]], value: Callable[[dict[str, Any]], float]
) -> dict[str, tuple[list[int], list[float]]]:
    lines: dict[str, tuple[list[int], list[float]]] = {}
    for clients, row in rows:
        for contender, measured in row.items():
            xs, ys = lines.setdefault(contender, ([], []))
            xs.append(clients)
            ys.append(value(measured))
    return lines


def _s3_bytes(results: dict[str, Any], out: Path, note: str) -> Path:
    figure, (ax,) = _figure("S3 reads during a cold storm: flat for registry-local")
    for contender, (xs, ys) in _by_contender(
        _clients(results), lambda m: m["s3_blob_bytes_ratio"]
    ).items():
        ax.plot(xs, ys, marker="o", label=contender, color=_COLOURS.get(contender))
    ax.set_xlabel("clients pulling the same image at once")
    ax.set_ylabel("bytes read from S3 / blob bytes")
    ax.set_yscale("log")
    ax.axhline(1, color="#999999", linewidth=0.8, linestyle=":")
    ax.legend()
    return _save(figure, out / "s3-bytes-per-blob.svg", note)


def _storm_seconds(results: dict[str, Any], out: Path, note: str) -> Path:
    figure, (ax,) = _figure("A cold storm's time, every pull verified")
    for contender, (xs, ys) in _by_contender(_clients(results), lambda m: m["seconds"]).items():
        ax.plot(xs, ys, marker="o", label=contender, color=_COLOURS.get(contender))
    warm = _by_contender(_clients(results), lambda m: m.get("warm_seconds", float("nan"))).get(
        "registry-local"
    )
    if warm is not None:
        ax.plot(*warm, linestyle="--", color="#999999", label="the same storm warm (the clients)")
    ax.set_xlabel("clients")
    ax.set_ylabel("seconds until every pull is done")
    ax.legend()
    return _save(figure, out / "storm-seconds.svg", note)


def _fleet_scale(
    model: list[dict[str, Any]], measured: dict[str, Any] | None, out: Path, note: str
) -> Path:
    blob = model[0]["blob"] >> 20
    figure, (origin, upload, storm) = _figure(
        f"The fleet at any size: one new {blob:g} MiB blob (scale model)", panels=3
    )
    flat = sorted((r["hosts"], r) for r in model if r["design"] == "flat")
    hosts = [h for h, _ in flat]
    parts = sorted({r["part"] for r in model if r["design"] == "staged"})

    def staged(part: int) -> list[dict[str, Any]]:
        rows = [r for r in model if r["design"] == "staged" and r["part"] == part]
        return sorted(rows, key=lambda r: int(r["hosts"]))

    alone = _COLOURS["registry:2 on S3"]
    origin.plot(hosts, hosts, marker="o", color=alone, label="each host on its own")
    origin.plot(hosts, [1] * len(hosts), marker="o", color=_COLOURS["registry-local"])
    origin.lines[-1].set_label("coordinated (flat or staged)")
    origin.set_ylabel("origin reads per blob")
    flat_colour = _COLOURS["registry:2 proxy"]
    label = "flat: every follower streams from the holder"
    upload.plot(hosts, [r["busiest_upload"] for _, r in flat], "o-", color=flat_colour, label=label)
    rows = staged(parts[0])
    upload.plot(
        [r["hosts"] for r in rows],
        [r["busiest_upload"] for r in rows],
        "o-",
        color=_COLOURS["registry-local"],
        label=f"staged parts, --peer-max-streams {rows[0]['max_streams']} (any part size)",
    )
    if measured is not None:
        for name, row in measured["designs"].items():
            at = (measured["hosts"], row["busiest_upload_ratio"])
            upload.scatter(*at, marker="x", color="black", zorder=3)
            upload.annotate(
                f"{name} (measured)", at, fontsize=6, xytext=(5, -2), textcoords="offset points"
            )
    upload.set_ylabel("busiest host's upload / blob bytes")
    storm.plot(hosts, [r["storm"] for _, r in flat], "o-", color=flat_colour, label="flat")
    for part, colour in zip(parts, _PART_COLOURS, strict=False):
        rows = staged(part)
        storm.plot(
            [r["hosts"] for r in rows],
            [r["storm"] for r in rows],
            "o-",
            color=colour,
            label=f"staged, parts of {part >> 20} MiB",
        )
    storm.set_ylabel("seconds until every host has it")
    for ax in (origin, upload, storm):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("hosts starting it at once")
        ax.legend(fontsize=7)
    return _save(figure, out / "fleet-scale.svg", note)


def _bars(ax: Axes, title: str, bars: list[tuple[str, float, str]]) -> None:
    ax.set_title(title, fontsize=9)
    ax.barh([label for label, _, _ in bars], [s for _, s, _ in bars], color=[c for *_, c in bars])
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_xlim(0, 1.2 * max(s for _, s, _ in bars))  # room for the figures
    for y, (_, seconds, _) in enumerate(bars):
        ax.annotate(f"{seconds:.2f} s", (seconds, y), xytext=(3, -3), textcoords="offset points")


def _cold_pull(results: dict[str, Any], out: Path, note: str) -> Path | None:
    """Each pull beside the least time its link allows and a bare client's read."""
    panels: list[tuple[str, list[tuple[str, float, str]]]] = []
    floor, ours = "#999999", _COLOURS["registry-local"]
    layers = results.get("cold-layers")
    if layers:
        bucket = layers["prefetch"]["bucket_pull_seconds"]
        panels.append(
            (
                f"{layers['layers']} layers of {layers['layer_mb']:g} MiB, "
                f"{layers['link_mbps']:g} MB/s link",
                [
                    ("the link (computed)", layers["link_floor_seconds"], floor),
                    ("bare client, from the bucket", bucket, _COLOURS["bare client"]),
                    ("registry-local, no prefetch", layers["no prefetch"]["seconds"], "#a6dba0"),
                    ("registry-local, prefetch", layers["prefetch"]["seconds"], ours),
                ],
            )
        )
    ranged = results.get("ranged")
    if ranged and "ranged" in ranged:
        one, parts = ranged["one stream"], ranged["ranged"]
        size = parts["mb_per_second"] * parts["seconds"] * 1e6
        panels.append(
            (
                f"one {size / 2**30:.0f} GiB blob, {ranged['link_mbps']:g} MB/s link",
                [
                    ("the link (computed)", size / (ranged["link_mbps"] * 1e6), floor),
                    ("registry-local, one stream", one["seconds"], "#a6dba0"),
                    ("registry-local, ranged parts", parts["seconds"], ours),
                ],
            )
        )
    if not panels:
        return None
    figure, axes = _figure("A cold pull against its floors", panels=len(panels))
    for ax, (title, bars) in zip(axes, panels, strict=True):
        _bars(ax, title, bars)
    return _save(figure, out / "cold-pull.svg", note)


def _lazy(results: dict[str, Any], out: Path, note: str) -> Path:
    lazy = results["lazy"]
    phases = [("footer", "footer"), ("toc", "table of contents"), ("chunks", "all chunks")]
    contenders = [c for c in ("bare client", "registry-local", "registry:2 on S3") if c in lazy]
    figure, (ax,) = _figure(f"A lazy puller's reads of a cold {lazy['layer_mb']:g} MiB layer")
    width = 0.8 / len(contenders)
    for n, contender in enumerate(contenders):
        xs = [i + n * width for i in range(len(phases))]
        ax.bar(
            xs,
            [lazy[contender][key] for key, _ in phases],
            width,
            label=contender,
            color=_COLOURS[contender],
        )
    ax.set_xticks([i + width * (len(contenders) - 1) / 2 for i in range(len(phases))])
    ax.set_xticklabels([label for _, label in phases])
    ax.set_ylabel("seconds from the first request")
    ax.legend()
    return _save(figure, out / "lazy.svg", note)


def write_charts(
    results: dict[str, Any], out: Path, model: list[dict[str, Any]] | None = None, source: str = ""
) -> list[Path]:
    """Every chart the results (and the model's rows) allow, written into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    note = f"from {source}" if source else ""
    written: list[Path] = []
    # A fixed hash salt and no date: the same results draw the same file.
    with plt.rc_context({"svg.hashsalt": "registry-local", "svg.fonttype": "none"}):
        if results.get("cold"):
            written += [_s3_bytes(results, out, note), _storm_seconds(results, out, note)]
        if model:
            written.append(_fleet_scale(model, results.get("fleet-scale"), out, note))
        cold = _cold_pull(results, out, note)
        if cold is not None:
            written.append(cold)
        if results.get("lazy"):
            written.append(_lazy(results, out, note))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a results file of bench/run.py --json")
    parser.add_argument("--model", type=Path, help="rows of bench/fleet_model.py --json")
    parser.add_argument("--out", type=Path, default=Path("docs/charts"))
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    model = json.loads(args.model.read_text()) if args.model else None
    sources = " and ".join(p.name for p in (args.results, args.model) if p is not None)
    for path in write_charts(results, args.out, model, sources):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
