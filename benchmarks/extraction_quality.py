"""Finding-extraction quality on hand-annotated MedPix 2.0 dev "Findings" sentences.

The gold set (tests/data/extraction_gold.jsonl; how it was made: tests/data/EXTRACTION_GOLD.md) holds
sentences with every finding mention's character span, status (present / absent / uncertain) and the
ontology concept ids that correctly name it (empty when the ontology has none). Each sentence goes
through `FindingExtractor.extract_many` on its own, once per spaCy base (`en_core_web_sm`, `blank`).

Matching. A predicted finding *matches* a gold mention when their character spans overlap and the
predicted concept_id is one of the mention's accepted concept_ids (a mention with no accepted ids can
never be matched, so it always counts as a miss).

- present precision: predicted findings with status present that match a gold mention whose status is
  present, over all predicted present findings (a present prediction on an absent or uncertain gold
  mention, on a wrong concept, or on no mention at all is a false positive);
- present recall: gold present mentions matched by at least one present prediction, over all gold
  present mentions; F1 their harmonic mean;
- for absent and for uncertain gold mentions: *found* = matched by some prediction (any status);
  `accuracy_found` = found mentions whose matching prediction carries the gold status / found mentions,
  `end_to_end` = the same numerator / all gold mentions of that status. "Negation accuracy" is
  `absent.accuracy_found`; `absent.precision_found` = matched predictions marked absent whose gold
  mention is absent / matched predictions marked absent (over-negation shows here);
- status accuracy: over all found gold mentions, the fraction whose matching prediction has the gold
  status (when several predictions match one mention, the one with the largest overlap decides);
- throughput: whole MedPix dev Findings texts (one report per case) through `extract_many`, after a
  warm-up, best of three runs (the extractor's cache of linker scores emptied before each), in reports
  per second.

Targets (issue 3): present F1 >= 0.85, negation accuracy >= 0.95. The better base is the one with the
higher present F1, then negation accuracy, then throughput.

Usage: python -m kgreport.benchmarks.extraction_quality [--base en_core_web_sm blank] [--gold ...] [--medpix ...]
       python -m kgreport.benchmarks.extraction_quality --select   (print the deterministic sentence selection)
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GOLD = REPO / "tests" / "data" / "extraction_gold.jsonl"
MEDPIX = REPO.parent / "shared" / "data" / "medpix2"
TARGETS = {"present_f1": 0.85, "negation_accuracy": 0.95}
STATUSES = ("present", "absent", "uncertain")

# Sentences with one of these words are all taken (negation and hedging are what the gold set must test).
CUE = re.compile(
    r"\b(no|not|without|negative for|absence of|absent|resolution of|resolved|possible|possibly|probable|"
    r"probably|likely|may|might|could|versus|vs|cannot|questionable|suspicious|suggest\w*|differential|ddx|"
    r"consistent with|compatible with|rule out|exclude\w*)\b",
    re.IGNORECASE,
)


# -- sentence selection (how the gold set's sentences were chosen) -----------------------------------
def _segments(text: str) -> list[str]:
    """Lines joined into paragraphs; a line starting with a capital, a bullet or a dash opens a new one
    (MedPix hard-wraps some reports mid-sentence, and lists findings one per line in others)."""
    out: list[str] = []
    current: list[str] = []
    for line in text.replace("\r", "").split("\n"):
        line = line.strip()
        if not line:
            if current:
                out.append(" ".join(current))
                current = []
            continue
        if current and re.match(r"[A-Z•\-–]", line):
            out.append(" ".join(current))
            current = []
        current.append(line)
    if current:
        out.append(" ".join(current))
    return out


def report_sentences(text: str) -> list[str]:
    """A Findings text cut into sentences, bullets and dashes stripped, whitespace collapsed."""
    sentences = []
    for segment in _segments(text or ""):
        for piece in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9“\"(•\-])", segment):
            piece = re.sub(r"\s+", " ", re.sub(r"^[•\-–\s]+", "", piece)).strip()
            if piece:
                sentences.append(piece)
    return sentences


def _trivial(sentence: str) -> bool:
    return len(re.findall(r"[A-Za-z]{2,}", sentence)) < 2 or sentence.endswith(":")


def select_sentences(dev_path: Path, first: int = 1) -> list[tuple[str, str]]:
    """(case id, sentence): cases in U_id order; per case its first `first` non-trivial sentences plus
    every later one with a negation or hedging word (CUE)."""
    rows = [json.loads(line) for line in dev_path.read_text().splitlines() if line.strip()]
    out = []
    for row in sorted(rows, key=lambda r: r["U_id"]):
        findings = (row.get("Case") or {}).get("Findings") or ""
        sentences = [s for s in report_sentences(findings) if not _trivial(s)]
        out += [(row["U_id"], s) for i, s in enumerate(sentences) if i < first or CUE.search(s)]
    return out


def dev_reports(dev_path: Path) -> list[str]:
    rows = [json.loads(line) for line in dev_path.read_text().splitlines() if line.strip()]
    return [text for r in rows if (text := ((r.get("Case") or {}).get("Findings") or "").strip())]


# -- scoring ------------------------------------------------------------------------------------------
def load_gold(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _overlap(a_start: int, a_end: int, b_start: int, b_end: int) -> int:
    return max(0, min(a_end, b_end) - max(a_start, b_start))


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _matches(pred: Any, mention: dict[str, Any]) -> bool:
    return bool(_overlap(pred.start, pred.end, mention["start"], mention["end"])) and (
        pred.concept_id in mention["concept_ids"]
    )


def score(gold: list[dict[str, Any]], predictions: list[list[Any]]) -> dict[str, Any]:
    """Scores predictions (one list of `Finding`s per gold sentence); see the module docstring."""
    pred_present = tp_present = 0
    gold_count = dict.fromkeys(STATUSES, 0)
    found = dict.fromkeys(STATUSES, 0)
    right = dict.fromkeys(STATUSES, 0)
    recalled_present = 0
    absent_pred_matched = absent_pred_right = 0
    errors: list[dict[str, Any]] = []
    for item, preds in zip(gold, predictions, strict=True):
        mentions = item["findings"]
        for p in preds:
            hits = [m for m in mentions if _matches(p, m)]
            if p.status == "present":
                pred_present += 1
                if any(m["status"] == "present" for m in hits):
                    tp_present += 1
                else:
                    errors.append({"sentence": item["sentence"], "kind": "false_positive", "pred": p.as_json()})
            if p.status == "absent" and hits:
                absent_pred_matched += 1
                absent_pred_right += any(m["status"] == "absent" for m in hits)
        for m in mentions:
            gold_count[m["status"]] += 1
            matching = [p for p in preds if _matches(p, m)]
            if m["status"] == "present" and any(p.status == "present" for p in matching):
                recalled_present += 1
            if not matching:
                errors.append({"sentence": item["sentence"], "kind": "missed", "gold": m})
                continue
            best = max(matching, key=lambda p: _overlap(p.start, p.end, m["start"], m["end"]))
            found[m["status"]] += 1
            if best.status == m["status"]:
                right[m["status"]] += 1
            else:
                errors.append({"sentence": item["sentence"], "kind": "wrong_status", "gold": m, "pred": best.status})
    precision = tp_present / pred_present if pred_present else 0.0
    recall = recalled_present / gold_count["present"] if gold_count["present"] else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    per_status = {
        s: {
            "gold": gold_count[s],
            "found": found[s],
            "accuracy_found": _ratio(right[s], found[s]),
            "end_to_end": _ratio(right[s], gold_count[s]),
        }
        for s in ("absent", "uncertain")
    }
    per_status["absent"]["precision_found"] = _ratio(absent_pred_right, absent_pred_matched)
    return {
        "present": {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "predicted": pred_present,
            "gold": gold_count["present"],
        },
        **per_status,
        "status_accuracy": _ratio(sum(right.values()), sum(found.values())),
        "negation_accuracy": per_status["absent"]["accuracy_found"],
        "errors": errors,
    }


# -- running ------------------------------------------------------------------------------------------
def throughput(extractor: Any, reports: list[str], runs: int = 3) -> float:
    extractor.extract_many(reports[:2])  # warm-up
    best = float("inf")
    for _ in range(runs):
        getattr(extractor, "_link_cache", {}).clear()  # every run links its noun phrases afresh
        started = time.perf_counter()
        extractor.extract_many(reports)
        best = min(best, time.perf_counter() - started)
    return len(reports) / best


def reachable(gold: list[dict[str, Any]], concept_ids: set[str]) -> dict[str, int]:
    """Gold mentions by status whose accepted ids include at least one the lexicon has."""
    out = dict.fromkeys(STATUSES, 0)
    for item in gold:
        for m in item["findings"]:
            out[m["status"]] += bool(set(m["concept_ids"]) & concept_ids)
    return out


def evaluate(base: str, lexicon: list[Any], cache: Path, gold: list[dict[str, Any]], reports: list[str]) -> dict:
    from kgreport.knowledge.extraction.extractor import FindingExtractor

    started = time.perf_counter()
    extractor = FindingExtractor(lexicon, cache, base=base)
    load_seconds = time.perf_counter() - started
    predictions = extractor.extract_many([item["sentence"] for item in gold])
    result = score(gold, predictions)
    met = {
        "present_f1": result["present"]["f1"] >= TARGETS["present_f1"],
        "negation_accuracy": (result["negation_accuracy"] or 0.0) >= TARGETS["negation_accuracy"],
    }
    return {
        "base": base,
        **result,
        "targets_met": met,
        "load_seconds": round(load_seconds, 1),
        "reports_per_second": round(throughput(extractor, reports), 1) if reports else None,
        "throughput_reports": len(reports),
        "throughput_chars": sum(len(r) for r in reports),
    }


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def table(rows: Iterable[dict[str, Any]]) -> str:
    head = (
        f"{'base':16s} {'P':>6s} {'R':>6s} {'F1':>6s} | {'neg acc':>7s} {'neg e2e':>7s} | "
        f"{'unc acc':>7s} {'unc e2e':>7s} | {'status':>6s} | {'rep/s':>7s} | targets (F1, neg)"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        met = r["targets_met"]
        lines.append(
            f"{r['base']:16s} {_fmt(r['present']['precision']):>6s} {_fmt(r['present']['recall']):>6s} "
            f"{_fmt(r['present']['f1']):>6s} | {_fmt(r['absent']['accuracy_found']):>7s} "
            f"{_fmt(r['absent']['end_to_end']):>7s} | {_fmt(r['uncertain']['accuracy_found']):>7s} "
            f"{_fmt(r['uncertain']['end_to_end']):>7s} | {_fmt(r['status_accuracy']):>6s} | "
            f"{r['reports_per_second'] or 0:7.1f} | {'met' if met['present_f1'] else 'NOT met'}, "
            f"{'met' if met['negation_accuracy'] else 'NOT met'}"
        )
    return "\n".join(lines)


def main() -> None:
    from kgreport.benchmarks.results_io import RESULTS, write_result
    from kgreport.knowledge.extraction.lexicon import build_lexicon

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gold", type=Path, default=GOLD)
    parser.add_argument("--medpix", type=Path, default=MEDPIX)
    parser.add_argument("--base", nargs="+", default=["en_core_web_sm", "blank"])
    parser.add_argument("--cache", type=Path, default=None, help="linker index cache (default: a temp dir)")
    parser.add_argument("--errors", action="store_true", help="print every false positive, miss and status error")
    parser.add_argument("--select", action="store_true", help="print the sentence selection and exit")
    parser.add_argument("--out", type=Path, default=RESULTS / "extraction_quality.json")
    args = parser.parse_args()
    dev = args.medpix / "data_dev.jsonl"
    if args.select:
        for case_id, sentence in select_sentences(dev):
            print(f"{case_id}\t{sentence}")
        return
    gold = load_gold(args.gold)
    reports = dev_reports(dev) if dev.is_file() else []
    folder = REPO / "data" / "ontology"
    lexicon = build_lexicon(folder / "radlex.csv.gz", folder / "finding_models.jsonl.gz")
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        rows = [evaluate(base, lexicon, cache, gold, reports) for base in args.base]
    if args.errors:
        for row in rows:
            print(f"== {row['base']}")
            for e in row["errors"]:
                print(json.dumps(e))
    print(table(rows))
    # better = higher present F1, then negation accuracy, then throughput (equal quality: the faster one)
    best = max(rows, key=lambda r: (r["present"]["f1"], r["negation_accuracy"] or 0.0, r["reports_per_second"] or 0))
    print(f"better base: {best['base']}")
    write_result(
        args.out,
        {
            "benchmark": "extraction_quality",
            "gold": str(args.gold.relative_to(REPO) if args.gold.is_relative_to(REPO) else args.gold),
            "sentences": len(gold),
            "gold_mentions": {s: sum(m["status"] == s for g in gold for m in g["findings"]) for s in STATUSES},
            "gold_mentions_without_concept": sum(not m["concept_ids"] for g in gold for m in g["findings"]),
            "gold_mentions_reachable_in_lexicon": reachable(gold, {e.concept_id for e in lexicon}),
            "targets": TARGETS,
            "better_base": best["base"],
            "results": [{k: v for k, v in r.items() if k != "errors"} for r in rows],
        },
    )


if __name__ == "__main__":
    main()
