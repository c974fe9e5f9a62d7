"""Usage: python benchmarks/privacy_filter.py [--cases 400] [--seed 0]

Recall of the PII filter on personal data planted in sentences (Faker, seeded, 7 + 6 held-out locales), and
the share of movie-overview characters it alters where there is no personal data to find (false
positives; the shared movielens-100k-mm overviews, skipped when absent, and the synthetic
descriptions). Beside ours, in the same run: Presidio's stock pattern recognizers alone (no person
names), and ours with the cue rule only (no dictionary).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pandas as pd
import record

LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "en_IN"]
# Names from locales whose lists the dictionary rule does not use: recall on unseen names.
HELD_OUT = ["fi_FI", "cs_CZ", "hu_HU", "da_DK", "pt_PT", "ro_RO"]
# Faker's en_GB/en_US/en_IN IBANs have the wrong length for their country: plant real-format ones only.
IBAN_LOCALES = ["de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL"]
TEMPLATES = {
    "EMAIL_ADDRESS": ["Please email {} about my order.", "contact: {}", "Write to {} if it breaks."],
    "PHONE_NUMBER": ["Call me on {} tonight.", "my number is {}", "Phone: {}"],
    "CREDIT_CARD": ["I paid with card {} yesterday.", "card no. {} was charged twice"],
    "IBAN_CODE": ["Refund to {} please.", "IBAN: {}"],
    "IP_ADDRESS": ["It failed from {} again.", "client {} timed out"],
    "PERSON": [
        "My name is {} and I loved it.",
        "Regards, {}",
        "{} recommended this to me.",
        "I watched it with {} last week.",
        "Thanks to {} for the tip.",
    ],
}
TEMPLATES["PERSON*"] = TEMPLATES["PERSON"]  # the same, with held-out names


def planted(n: int, seed: int) -> list[tuple[str, str, str]]:
    from faker import Faker

    rng = random.Random(seed)
    fakers = {loc: Faker(loc) for loc in {*LOCALES, *HELD_OUT, *IBAN_LOCALES}}
    for i, f in enumerate(fakers.values()):
        f.seed_instance(seed + i)
    make = {
        "EMAIL_ADDRESS": lambda f: f.email(),
        "PHONE_NUMBER": lambda f: f.phone_number(),
        "CREDIT_CARD": lambda f: f.credit_card_number(),
        "IBAN_CODE": lambda f: f.iban(),
        "IP_ADDRESS": lambda f: f.ipv4() if rng.random() < 0.7 else f.ipv6(),
        "PERSON": lambda f: f"{f.first_name()} {f.last_name()}",
    }
    make["PERSON*"] = make["PERSON"]
    cases = []
    for k in range(n):
        entity = list(TEMPLATES)[k % len(TEMPLATES)]
        pool = HELD_OUT if entity == "PERSON*" else IBAN_LOCALES if entity == "IBAN_CODE" else LOCALES
        value = make[entity](fakers[pool[rng.randrange(len(pool))]])
        cases.append((rng.choice(TEMPLATES[entity]).format(value), entity, value))
    return cases


def recall(pii, cases, scored: set[str]) -> dict[str, float]:
    """Recall per planted kind, and ``all`` over the kinds in ``scored`` only (what the filter is set to find,
    and names only from lists it never saw)."""
    hits: dict[str, list[bool]] = {}
    for text, entity, value in cases:
        start = text.index(value)
        ok = any(
            f.entity == entity.rstrip("*") and f.start <= start and f.end >= start + len(value) for f in pii.find(text)
        )
        hits.setdefault(entity, []).append(ok)
    out = {e: sum(v) / len(v) for e, v in hits.items()}
    kept = [v for e, v in hits.items() if e in scored]
    out["all"] = sum(sum(v) for v in kept) / sum(len(v) for v in kept)
    return out


def altered_share(pii, texts: list[str]) -> tuple[float, int]:
    """(share of characters inside a finding, number of texts with any finding)."""
    total = altered = touched = 0
    for text in texts:
        spans = sorted((f.start, f.end) for f in pii.find(text))
        covered, end = 0, -1
        for s, e in spans:
            s = max(s, end)
            if e > s:
                covered += e - s
                end = e
        total += len(text)
        altered += covered
        touched += bool(spans)
    return altered / max(1, total), touched


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import numpy as np

    from fusionrec.config import PrivacySettings
    from fusionrec.data.synth import GENRES, _describe
    from fusionrec.privacy import PiiFilter

    cases = planted(args.cases, args.seed)
    ml = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "movielens-100k-mm" / "items.csv"
    overviews = pd.read_csv(ml)["overview"].dropna().drop_duplicates().tolist() if ml.exists() else []
    rng = np.random.default_rng(args.seed)
    synthetic = [_describe(rng, g) for g in list(GENRES) * 100]

    base = PrivacySettings()
    configs = {
        "fusionrec (cue + dictionary names)": base,
        "fusionrec, cue names only": base.model_copy(update={"person_dictionary": False}),
        "Presidio patterns alone (no names)": base.model_copy(
            update={"entities": tuple(e for e in base.entities if e != "PERSON")}
        ),
    }
    entities = list(TEMPLATES)
    head = (
        f"{'filter':<38}"
        + "".join(f"{e.split('_')[0][:8]:>9}" for e in entities)
        + f"{'all':>8}"
        + f"{'overview chars':>16}{'films hit':>11}{'synth chars':>13}"
    )
    print(
        "PERSON*: names from locales the dictionary does not use (" + ", ".join(HELD_OUT) + "); PERSON: names "
        "from the dictionary's own lists, shown but not in 'all'"
    )
    print("'all': the kinds each filter is configured to find (Presidio alone: no names)")
    print(
        f"{len(cases)} planted cases over {len(LOCALES)} locales; {len(overviews)} distinct movie overviews"
        + ("" if overviews else " (movielens-100k-mm absent: overview column skipped)")
    )
    print(head)
    got = {}
    for name, cfg in configs.items():
        pii = PiiFilter(cfg)
        scored = {e for e in entities if e != "PERSON" and ("PERSON" in cfg.entities or not e.startswith("PERSON"))}
        r = recall(pii, cases, scored)
        ov, hit = altered_share(pii, overviews) if overviews else (float("nan"), 0)
        sy, _ = altered_share(pii, synthetic)
        got[name] = (r, ov)
        print(
            f"{name:<38}"
            + "".join(f"{r.get(e, 0):>9.1%}" for e in entities)
            + f"{r['all']:>8.1%}"
            + f"{ov:>16.3%}{hit:>11}{sy:>13.3%}"
        )
    (ours, ours_ov), (cue, cue_ov), (presidio, presidio_ov) = got.values()
    record.write(
        "privacy_filter",
        "python benchmarks/privacy_filter.py",
        [
            record.Figure(
                "recall",
                f"PII recall on {len(cases)} planted cases ({len(LOCALES)} locales; names from "
                f"{len(HELD_OUT)} locales the dictionary never saw): {ours['all']:.1%}; e-mail "
                f"{ours['EMAIL_ADDRESS']:.0%}, phone {ours['PHONE_NUMBER']:.0%}, card {ours['CREDIT_CARD']:.1%}, "
                f"IBAN {ours['IBAN_CODE']:.0%}, IP {ours['IP_ADDRESS']:.0%}, held-out names {ours['PERSON*']:.1%} "
                f"(names from its own lists {ours['PERSON']:.1%})",
                f"Presidio patterns alone, on the kinds it finds (no names): {presidio['all']:.1%}; the cue "
                f"rule alone: held-out names {cue['PERSON*']:.1%}",
                f"PII recall, {len(cases)} planted cases, names from unseen lists: {ours['all']:.1%} "
                f"(Presidio patterns alone on their kinds {presidio['all']:.1%})",
                ours["all"],
            ),
            record.Figure(
                "false_positives",
                f"share of movielens overview characters altered: {ours_ov:.2%} "
                f"({cue_ov:.2%} with the dictionary rule off)",
                f"Presidio patterns alone: {presidio_ov:.3%}",
                value=ours_ov,
            ),
        ],
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
