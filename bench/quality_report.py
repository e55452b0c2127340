"""Summaries, comparisons (Holm-corrected), hypotheses and the markdown of the quality run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quality_lib import NDCG

from recflow.ops.machine import summary

HISTORY = Path(__file__).with_name("quality_history.md")
METRICS = {
    "ms": [NDCG, "precision@10", "recall@10", "map", "map@10"],
    "loo": ["hr@10", NDCG, "mrr@10"],
    "peers": ["hr@10", NDCG, "mrr@10"],
}
TITLES = {
    "ms": "MS protocol (stratified 75/25 by item)",
    "loo": "Leave-one-out, ours (validation item withheld from the test input)",
    "peers": "Leave-one-out, peers' (RecBole default: validation item in the test input)",
}
PUBLISHED_CONTEXT = [
    "BiVAE 0.4751, BPR 0.4420, LightGCN 0.4198, NCF 0.3961, SAR 0.3825: MS protocol, ML-100K, "
    "nDCG@10 (Microsoft Recommenders, examples/06_benchmarks/movielens.ipynb). Same protocol.",
    "SASRec NDCG@10 0.5905, HR@10 0.8245 on MovieLens-1M (Kang & McAuley, ICDM 2018, Table 3): "
    "leave-one-out with the validation item in the input, but 100 sampled negatives rather than "
    "full ranking and other data: not comparable with any row here.",
    "No published SASRec figure on ML-100K under RecBole's defaults (LOO, order TO, full "
    "ranking, no filtering) was found; H2 is not testable on ML-100K.",
]


def _files(doc: dict[str, Any]) -> dict[tuple[str, str], str]:
    out = {}
    for g in doc.get("groups", []):
        for key, path in g.get("files", {}).items():
            row, variant = key.split("/")
            out[(row, variant)] = path
    return out


def analyse(doc: dict[str, Any], spec: dict[str, Any], sha: str) -> dict[str, Any]:
    from recflow.evaluation.compare import holm, load_user_scores, one_sample_test, paired_test

    samples = spec["bootstrap"]
    scores = {key: load_user_scores(Path(p), sha) for key, p in _files(doc).items()}
    rows: dict[str, dict[str, Any]] = {}
    from recflow.evaluation.compare import seed_summary

    for (row, variant), s in scores.items():
        rows.setdefault(variant, {})[row] = {
            m: seed_summary(s, m, samples=samples) for m in METRICS[variant] if m in s.values
        }
    heads = {
        "ms": doc["selection"]["ms"]["choice"],
        "loo": doc["selection"]["loo"]["choice"],
        "peers": "sasrec",
    }
    comparisons: list[dict[str, Any]] = []
    for variant, head in heads.items():
        if (head, variant) not in scores:
            continue
        for (row, v), other in scores.items():
            if v == variant and row != head:
                c = paired_test(scores[(head, variant)], other, NDCG, samples=samples)
                comparisons.append({"variant": variant, **c})
        if variant == "ms":
            for name, figure in spec["published"]["ms"].items():
                c = one_sample_test(scores[(head, variant)], NDCG, figure, name)
                comparisons.append({"variant": variant, **c})
    adjusted = holm([c["p"] for c in comparisons]) if comparisons else []
    for comparison, p in zip(comparisons, adjusted, strict=True):
        comparison["p_holm"] = p
        comparison["beats"] = bool(comparison["diff"] > 0 and p < spec["alpha"])
        comparison["worse"] = bool(comparison["diff"] < 0 and p < spec["alpha"])
    return {
        "rows": rows,
        "comparisons": comparisons,
        "hypotheses": hypotheses(doc, comparisons, heads),
        "published_context": PUBLISHED_CONTEXT,
    }


def hypotheses(
    doc: dict[str, Any], comps: list[dict[str, Any]], heads: dict[str, str]
) -> list[str]:
    out = []
    ms = {c["b"].split(" ")[0]: c for c in comps if c["variant"] == "ms"}
    head = heads["ms"]
    if head == "ease":
        out.append("H1 MISSED: the inner folds choose EASE itself; no model beats EASE there.")
    elif "ease" in ms and "BiVAE" in ms:
        e, b = ms["ease"], ms["BiVAE"]
        ok = e["beats"] and b["beats"]
        out.append(
            f"H1 {'MET' if ok else 'MISSED'}: {head} - EASE {e['diff']:+.4f} (Holm p "
            f"{e['p_holm']:.2g}), {head} - BiVAE 0.4751 {b['diff']:+.4f} (Holm p {b['p_holm']:.2g})"
        )
    else:
        out.append("H1 not decided: rows missing (run incomplete)")
    peers = [c for c in comps if c["variant"] == "peers"]
    verdict = ", ".join(
        f"vs {c['b']} {c['diff']:+.4f} ({'beats' if c['beats'] else 'not shown'})" for c in peers
    )
    out.append(
        "H2 NOT TESTABLE on ML-100K: no published SASRec figure on this protocol was found "
        "(context in Published figures). Measured on the peers' variant: SASRec "
        + (verdict or "- (rows not finished)")
    )
    run = doc.get("run", {})
    wall = run.get("wall_seconds", 0)
    complete = doc.get("complete")
    ok = complete and wall < 3600
    out.append(
        f"H3 {'MET' if ok else 'MISSED' if complete else 'NOT DECIDED (incomplete)'}: full "
        f"benchmark {wall / 60:.1f} min (target < 60), load average at start "
        f"{run.get('load_avg_start')}, at the end {run.get('load_avg_now')}"
    )
    return out


# The config defaults before this protocol (src/recflow/config.py at commit 65ee604).
PREVIOUS = {
    "blend_item_lambda": 400.0,
    "blend_user_lambda": 800.0,
    "blend_weights": [0.1, 0.1, 0.8],
    "multvae_members": 4,
    "multvae_beta_max": 1.0,
    "multvae_epochs": 200,
    "sasrec_epochs": 60,
}


def changes(sel: dict[str, Any]) -> list[str]:
    out = []
    for p in ("ms", "loo"):
        fam = sel[p]["family"]
        now = {
            "blend_item_lambda": fam["item_lambda"],
            "blend_user_lambda": fam["user_lambda"],
            "blend_weights": fam["best_blend"]["weights"],
            "multvae_members": fam["vae"]["members"],
            "multvae_beta_max": fam["vae"]["cap"],
            "multvae_epochs": fam["vae"]["epochs"],
        }
        if "sasrec_epochs" in sel[p]:
            now["sasrec_epochs"] = sel[p]["sasrec_epochs"]
        for k, v in now.items():
            same = "unchanged" if v == PREVIOUS[k] else "CHANGED"
            out.append(f"{p}: {k} {PREVIOUS[k]} -> {v} ({same})")
        out.append(
            f"{p}: headline model blend (chosen on test-informed grounds before) -> "
            f"{sel[p]['choice']} (inner folds)"
            if p == "ms"
            else f"{p}: headline model sasrec (best on test before) -> {sel[p]['choice']}"
        )
    return out


def _seeds_label(row: str, seeds: list[int]) -> str:
    n = f"{len(seeds)} seed" + ("s" if len(seeds) != 1 else "")
    if row in ("sasrec_sqn", "ranking_mlp+dp"):
        return n + ", single-seed row by protocol"
    if row == "popularity":
        return "deterministic"
    if row == "ease":
        return n + ", deterministic"
    return n


def _parts(weights: list[float]) -> str:
    names = ("item EASE", "user-side EASE", "Mult-VAE")
    return " + ".join(f"{n} {w:g}" for n, w in zip(names, weights, strict=True) if w)


def _cell(s: dict[str, Any]) -> str:
    sd = f" ± {s['sd']:.4f}" if s.get("sd") is not None else ""
    return f"{s['mean']:.4f}{sd} [{s['low']:.4f}, {s['high']:.4f}]"


def _group_cost(doc: dict[str, Any]) -> list[str]:
    lines = ["| group | rows (seeds) | run s | train s per seed | CPU/wall | peak MB | load before |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for g in doc.get("groups", []):
        if "error" in g:
            lines.append(f"| {g['group']} | failed: see quality.json | {g.get('wall_seconds')} |")
            continue
        info = g.get("info", {})
        per_seed = info.get("train_seconds") or info.get("seconds_per_seed") or []
        rows = ", ".join(f"{r} ({len(s)})" for r, s in g["rows"].items())
        lines.append(
            f"| {g['group']} | {rows} | {g.get('run_seconds')} | "
            f"{', '.join(str(v) for v in per_seed)} | "
            f"{', '.join(str(v) for v in info.get('cpu_per_wall', [])) or '-'} | "
            f"{g.get('peak_rss_mb')} | {g.get('load_1m_before')} |"
        )
    for g in doc.get("groups", []):
        info = g.get("info", {})
        if info.get("epochs_trained"):
            lines.append(
                f"\n{g['group']}: with early stopping, epochs trained per seed "
                f"{info['epochs_trained']}, "
                f"weights kept from epochs {info.get('best_epoch')}"
            )
    return lines


def markdown(doc: dict[str, Any]) -> str:
    sel = doc["selection"]
    lines = [
        "# Quality benchmark: " + Path(doc["data"]).name,
        "",
        f"Command: `{doc['command']}`  ",
        f"Date: {doc['date']}; final run: {doc['final']}; complete: {doc['complete']}  ",
        f"Protocol: bench/PROTOCOL.md, sha256 `{doc['protocol_sha256']}`  ",
        f"Machine: {_machine(doc['machine'])}, TF {doc['machine']['tensorflow']}; shared with other jobs "
        "(load averages below)",
        "",
        "Cells: mean over seeds ± standard deviation over seeds [95 % user-bootstrap interval of "
        "the mean of per-user seed means]. Seeds per row in the cost table.",
        "",
        "## Selection (inner folds of the training part only)",
        "",
    ]
    for p in ("ms", "loo"):
        s = sel[p]
        fam = s["family"]
        lines += [
            f"- {p}: choice **{s['choice']}**; candidates (mean inner NDCG@10): "
            + ", ".join(f"{k} {v:.4f}" for k, v in s["candidates_inner_ndcg"].items()),
            f"  - item EASE lambda {fam['item_lambda']:g}, user-side lambda "
            f"{fam['user_lambda']:g}, Mult-VAE cap {fam['vae']['cap']:g} / members "
            f"{fam['vae']['members']} / epochs {fam['vae']['epochs']}; best blend weights "
            f"(item/user/vae) {fam['best_blend']['weights']}, i.e. {_parts(fam['best_blend']['weights'])} "
            f"({fam['best_blend']['ndcg']:.4f}); "
            f"best point {fam['best_point']['name']} {fam['best_point']['weights']}"
            + (f"; SASRec epochs {s['sasrec_epochs']}" if "sasrec_epochs" in s else "")
            + f"; {s.get('selection_seconds')} s"
            + (" (reused from cache: not quotable)" if s.get("reused_from_cache") else ""),
        ]
    for variant in ("ms", "loo", "peers"):
        rows = doc.get("rows", {}).get(variant)
        if not rows:
            continue
        cols = METRICS[variant]
        lines += ["", f"## {TITLES[variant]}", "", "| model | " + " | ".join(cols) + " |",
                  "|---|" + "---|" * len(cols)]  # fmt: skip
        order = sorted(rows, key=lambda r: -rows[r][NDCG]["mean"])
        for r in order:
            cells = [_cell(rows[r][m]) if m in rows[r] else "-" for m in cols]
            lines.append(
                f"| {r} ({_seeds_label(r, rows[r][NDCG]['seeds'])}) | " + " | ".join(cells) + " |"
            )
    comps = doc.get("comparisons", [])
    if comps:
        lines += ["", "## Comparisons (NDCG@10, Holm over all listed)", "",
                  "| variant | a - b | diff [paired bootstrap 95 %] | t | p | Holm p | verdict |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for c in comps:
            ci = f" [{c['low']:+.4f}, {c['high']:+.4f}]" if c.get("low") is not None else ""
            verdict = "a beats b" if c["beats"] else "b beats a" if c["worse"] else "not shown"
            lines.append(
                f"| {c['variant']} | {c['a']} - {c['b']} | {c['diff']:+.4f}{ci} | {c['t']:.2f} | "
                f"{c['p']:.2g} | {c['p_holm']:.2g} | {verdict} |"
            )
    lines += ["", "## Hypotheses (bench/PROTOCOL.md)", ""]
    lines += [f"- {h}" for h in doc.get("hypotheses", [])]
    lines += ["", "## Published figures", ""] + [f"- {p}" for p in PUBLISHED_CONTEXT]
    run = doc.get("run", {})
    lines += [
        "",
        "## Cost",
        "",
        f"Whole command: {run.get('wall_seconds')} s wall; peak RSS of the largest worker "
        f"{run.get('peak_rss_mb_workers')} MB; load average (1, 5, 15 min) at start "
        f"{run.get('load_avg_start')}, at the end {run.get('load_avg_now')}. Selection: ms "
        f"{sel['ms'].get('selection_seconds')} s ({sel['ms'].get('seconds')}), loo "
        f"{sel['loo'].get('selection_seconds')} s ({sel['loo'].get('seconds')}).",
        "",
        *_group_cost(doc),
    ]
    dp = [g for g in doc.get("groups", []) if g.get("info", {}).get("dp_epsilon")]
    for g in dp:
        lines.append(
            f"\nDP-SGD ({g['group']}): noise multiplier 1.1, clip 1.0, epsilon "
            f"{g['info']['dp_epsilon'][0]:.3f} (delta 1/training rows, per training row)."
        )
    if HISTORY.exists():
        lines += ["", HISTORY.read_text().strip()]
    lines += ["", "### Choices re-made (earlier default -> inner-fold choice now)", ""]
    lines += [f"- {c}" for c in changes(sel)]
    return "\n".join(lines) + "\n"


def _machine(info: dict[str, Any]) -> str:
    # Records before 2026-12-01 22:40 UTC named the core count cpu_count and no CPU model.
    return summary({"cores": info.get("cpu_count"), "cpu": info.get("platform"), **info})
