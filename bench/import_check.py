"""Check: our checkpoint import (qslaw_pipe/imports) against AutoRound's own export and dequantization, on the
default LM (SmolLM2-135M inside the default VLM). In the peers' venv (bench/peers.py) AutoRound quantizes and
saves in its auto_round, auto_gptq and auto_awq formats and dequantizes every layer with its own modules
(bench/peer_autoround_export.py); here each checkpoint is read by our importer and every layer's
delta * (code - zp) compared with AutoRound's weight. Writes docs/results/imports.{json,md}.

    python bench/import_check.py [--bits 4,3] [--group 64] [--iters 0] [--formats auto_round,auto_gptq,auto_awq]
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import peer_python, write_inputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"


def compare(saved: Path, original: dict) -> dict:
    """Ours against AutoRound's dequantization; where they differ, both against the original fp32 weight (how
    many steps delta each lies from it, at its farthest, in the groups that differ)."""
    from safetensors.torch import load_file

    from qslaw_pipe.kernels.quant import dequantize_codes, to_groups
    from qslaw_pipe.stages.calibrate.imports.checkpoint import read_checkpoint

    imported = read_checkpoint(saved)
    peer = load_file(str(saved / "peer_dequantized.safetensors"))
    worst, exact, groups, zero_zp, steps = 0.0, 0, 0, 0, [0.0, 0.0]
    for name, layer in imported.layers.items():
        ours = dequantize_codes(layer.codes, layer.delta, layer.zero_point, layer.group_size).half().float()
        theirs = peer[name].half().float()
        worst = max(worst, float((ours - theirs).abs().max()))
        exact += int(torch.equal(ours, theirs))
        differ = to_groups((ours - theirs).abs(), layer.group_size).amax(-1) > 0
        if differ.any():
            w = original[f"{name}.weight"].float()
            for i, x in enumerate((ours, theirs)):
                far = to_groups((x - w).abs(), layer.group_size).amax(-1) / layer.delta
                steps[i] = max(steps[i], far[differ].max().item())
            groups += int(differ.sum())
            zero_zp += int((layer.zero_point[differ] == 0).sum())
    return {
        "importer": imported.format,
        "layers": len(imported.layers),
        "exact_layers": exact,
        "max_abs_diff": worst,
        "groups_differing": groups,
        "differing_groups_with_zero_point_0": zero_zp,
        "ours_max_steps_from_fp_there": steps[0],
        "autoround_max_steps_from_fp_there": steps[1],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", default="4,3")
    ap.add_argument("--group", type=int, default=64)
    ap.add_argument("--iters", type=int, default=0)
    ap.add_argument("--formats", default="auto_round,auto_gptq,auto_awq")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-peers")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "imports")
    args = ap.parse_args()
    from qslaw_pipe.pipeline.sysinfo import machine_name

    stamp = {"measured": time.strftime("%Y-%m-%d"), "device": machine_name("cpu")}
    if not (args.work / "tokens.pt").is_file():
        write_inputs(args.work, 32, 32)
    python = peer_python()
    from safetensors.torch import load_file

    original = load_file(str(args.work / "lm" / "model.safetensors"))
    rows = []
    for bits in (int(b) for b in args.bits.split(",")):
        cmd = [str(python), str(ROOT / "bench" / "peer_autoround_export.py"), "--work", str(args.work)]
        cmd += [
            "--out",
            str(args.out),
            "--bits",
            str(bits),
            "--group",
            str(args.group),
            "--iters",
            str(args.iters),
            "--formats",
            args.formats,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        lines = [json.loads(ln) for ln in done.stdout.splitlines() if ln.startswith("{")]
        if done.returncode or not lines:
            raise SystemExit(f"the peer script failed:\n{done.stderr[-3000:]}")
        for line in lines:
            row = {"bits": bits, "group": args.group, "iters": args.iters, "format": line["format"], **stamp}
            row["autoround_s"] = line.get("quantize_s")
            if "error" in line:
                rows.append({**row, "peer_error": line["error"]})
            else:
                rows.append({**row, **compare(Path(line["dir"]), original)})
            print(rows[-1], flush=True)
    write(rows)


def merge_earlier(rows: list[dict]) -> list[dict]:
    """This run's rows and the earlier imports.json rows it did not redo (keyed by bits, group, iters, format)."""
    path = OUT / "imports.json"
    earlier = json.loads(path.read_text())["rows"] if path.is_file() else []
    key = lambda r: (r["bits"], r["group"], r["iters"], r["format"])  # noqa: E731
    done = {key(r) for r in rows}
    return sorted(rows + [r for r in earlier if key(r) not in done], key=lambda r: (r["iters"], -r["bits"]))


def write(rows: list[dict]) -> None:
    rows = merge_earlier(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "imports.json").write_text(json.dumps({"rows": rows}, indent=2))
    lines = [
        "# Checkpoint imports against AutoRound's own export",
        "",
        "Produced by `python bench/import_check.py`: AutoRound (peers' venv) quantizes the default LM and saves it in",
        "each format; our importer reads the checkpoint; every layer's delta * (code - zp) is compared with the",
        "weight AutoRound's own modules dequantize (both rounded to fp16, the checkpoints' scale dtype).",
        "",
        "AutoRound s: its quantize_and_save in that format, at the thread count named.",
        "",
        "| bits | group | AutoRound iters | AutoRound s | format | our importer | layers | layers equal bit for bit | max abs diff "
        "| where they differ | measured |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "peer_error" in r:
            cells = f"(AutoRound did not write it: {r['peer_error'][:80]}) | | | | |"
        else:
            cells = f"{r['importer']} | {r['layers']} | {r['exact_layers']} | {r['max_abs_diff']:.3g} | "
            if r.get("groups_differing"):
                cells += (
                    f"{r['groups_differing']} groups, {r['differing_groups_with_zero_point_0']} of them with zero "
                    f"point 0: ours within {r['ours_max_steps_from_fp_there']:.2f} steps of the fp32 weight there, "
                    f"AutoRound's own dequantization {r['autoround_max_steps_from_fp_there']:.2f} |"
                )
            else:
                cells += " |"
        lines.append(
            f"| {r['bits']} | {r['group']} | {r['iters']} | {r.get('autoround_s') or ''} | {r['format']} | {cells} "
            f"{r['measured']}, {r['device']} |"
        )
    (OUT / "imports.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
