"""Every citation of the DiT paper in the course names a part the paper really has.

tests/dit_paper.json lists the paper's sections (with the named paragraphs the course cites),
tables, figures and equations. This test scans every text file of the course (notebooks, README
files, minidit/, exercises/, solutions/, tests/; new files are picked up by themselves) for
citations -- "§3.2", "Table 4", "Figure 5", "Fig. 8", "Eqs. 12 and 16", "§4 *Evaluation metrics*"
-- and decides whose they are: a citation that follows the name of another paper ("DDPM Eq. 4",
"Improved DDPM §3.1", "(Ho & Salimans 2022, Eq. 6)", "Song et al. 2021, Eq. 12") is that paper's;
every other citation is DiT's and must be in the list. A few claims the course makes must also
sit next to the right citation (MISPLACED in the JSON file): the guided FID 2.27 is Table 2, not
Table 4, and so on.
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAPER = json.loads((ROOT / "tests" / "dit_paper.json").read_text())
FOLDERS = ("notebooks", "minidit", "exercises", "solutions", "tests")
SUFFIXES = {".py", ".md"}  # the .ipynb files are generated from the .py sources (tests/test_notebooks.py)

# Other papers whose sections, equations or figures the course cites, as it writes their names. A
# citation right after one of them (with only a year, "et al.", brackets, commas and other
# citations in between) is theirs. Add a name here when the course starts citing a new paper.
OTHER_PAPERS = (
    r"Improved DDPM",
    r"IDDPM",
    r"DDPM",
    r"DDIM",
    r"ADM",
    r"Ho & Salimans",
    r"Ho et al\.",
    r"Song et al\.",
    r"Nichol & Dhariwal",
    r"Dhariwal & Nichol",
    r"Vaswani et al\.",
    r"Wang et al\.",
    r"Heusel et al\.",
    r"Kynkäänniemi et al\.",
    r"Naeem et al\.",
    r"VDM",
    r"Kingma et al\.",
    r"SR3",
    r"MAE",
    r"ViT",
    r"LDM",
    r"Kingma & Welling",
)
OTHER = re.compile(r"(?:" + "|".join(OTHER_PAPERS) + r")(?![\w-])")
DIT = re.compile(r"\bDiT\b|the paper\b|Peebles")
KIND = r"(?:§|Tables?\s|Fig(?:ure)?s?\.?\s|Eqs?\.\s|Equations?\s|Algorithms?\s)"
NUMBER = r"\(?\d+(?:\.\d+)*\)?"
JOIN = r"(?:\s*(?:,|–|-|and|to)\s*)"
CITATION = re.compile(rf"(?P<kind>{KIND})\s?(?P<numbers>{NUMBER}(?:{JOIN}{NUMBER})*)")
PARAGRAPH = re.compile(r"§\s?(?P<section>\d+(?:\.\d+)*)\s*[*\"“](?P<name>[^*\"”\n]{2,60})[*\"”]")
# What may stand between a paper's name and its citation: a year, "et al.", "'s", brackets, commas,
# its other citations, and at most four lower-case words ("DDPM, just above Eq. 4", "DDPM's choice (Eq. 11)").
GLUE = re.compile(
    rf"^(?:[\s,;:()'’s]|\d{{4}}[a-z]?|et al\.|{KIND}\s?{NUMBER}|{JOIN}|{NUMBER})*"
    rf"(?:[a-z]+[\s,;:(]+){{0,4}}(?:[\s,;:()]|{KIND}\s?{NUMBER}|{JOIN})*$"
)


def _files() -> list[pathlib.Path]:
    files = [ROOT / "README.md"]
    for folder in FOLDERS:
        files += sorted(p for p in (ROOT / folder).rglob("*") if p.suffix in SUFFIXES and p.is_file())
    return [p for p in files if p != pathlib.Path(__file__).resolve()]


def _flat(text: str) -> str:
    """One line per file, comment markers and docstring indentation removed, so a citation split
    over two lines of a comment still follows its paper's name."""
    return re.sub(r"\s*\n\s*(?:#\s*)?", " ", text)


def _kind(kind: str) -> str:
    kind = kind.strip().rstrip("s.").lower()
    return {
        "§": "section",
        "table": "table",
        "fig": "figure",
        "figure": "figure",
        "eq": "equation",
        "equation": "equation",
        "algorithm": "algorithm",
    }[kind]


def _owner(flat: str, start: int) -> str:
    """'DiT' or the other paper's name whose citation starts at flat[start]."""
    before = flat[max(0, start - 120) : start]
    best = None
    for pattern in (OTHER, DIT):
        for m in pattern.finditer(before):
            if GLUE.match(before[m.end() :]) and (best is None or m.end() > best.end()):
                best = m
    if best is None or DIT.fullmatch(best.group(0)):
        return "DiT"
    return best.group(0)


def _numbers(text: str) -> list[str]:
    return [n.strip("()") for n in re.findall(NUMBER, text)]


def citations() -> list[tuple[str, str, str, str]]:
    """(file, owner, kind, number) for every citation in the course."""
    found = []
    for path in _files():
        flat = _flat(path.read_text(encoding="utf-8"))
        for m in CITATION.finditer(flat):
            kind = _kind(m.group("kind"))
            owner = _owner(flat, m.start())
            for number in _numbers(m.group("numbers")):
                found.append((str(path.relative_to(ROOT)), owner, kind, number))
    return found


def _exists(kind: str, number: str) -> bool:
    if kind == "section":
        return number in PAPER["sections"]
    if kind == "algorithm":
        return False  # DiT has no numbered algorithms
    return number in PAPER[kind + "s"]


def test_the_scan_finds_the_citations_it_should():
    """The scanner itself: it attributes these sentences as a reader would."""
    samples = {
        "DiT §3.2 and Figure 4": [("DiT", "section", "3.2"), ("DiT", "figure", "4")],
        "(DDPM Eq. 4); IDDPM §3.1, §4": [
            ("DDPM", "equation", "4"),
            ("IDDPM", "section", "3.1"),
            ("IDDPM", "section", "4"),
        ],
        "(Ho & Salimans 2022, Eq. 6; DiT §3.1)": [("Ho & Salimans", "equation", "6"), ("DiT", "section", "3.1")],
        "| §3.1; DDPM Eqs. 5–14 |": [("DiT", "section", "3.1"), ("DDPM", "equation", "5"), ("DDPM", "equation", "14")],
        "the paper's Figures 2 and 8, Table 4": [("DiT", "figure", "2"), ("DiT", "figure", "8"), ("DiT", "table", "4")],
        "DDIM (Song et al. 2021, Eq. 12). Table 1 lists": [("Song et al.", "equation", "12"), ("DiT", "table", "1")],
    }
    for text, expected in samples.items():
        flat = _flat(text)
        got = [
            (_owner(flat, m.start()), _kind(m.group("kind")), n)
            for m in CITATION.finditer(flat)
            for n in _numbers(m.group("numbers"))
        ]
        assert got == expected, f"{text!r}: {got}"
    # ... and the list knows the paper: §5 holds the block ablation, there is no §4.1.
    assert _exists("section", "5") and _exists("table", "2") and _exists("figure", "10")
    assert not _exists("section", "4.1")


def test_every_dit_citation_names_a_real_part_of_the_paper():
    found = citations()
    assert len(found) > 100, f"only {len(found)} citations found: is the scanner broken?"
    wrong = sorted({f"{f}: DiT {k} {n}" for f, owner, k, n in found if owner == "DiT" and not _exists(k, n)})
    assert not wrong, (
        "these citations name parts the DiT paper does not have (tests/dit_paper.json lists the real ones; "
        "if the citation is another paper's, write that paper's name right before it):\n  " + "\n  ".join(wrong)
    )


def test_named_paragraphs_are_in_the_section_cited():
    wrong = []
    for path in _files():
        flat = _flat(path.read_text(encoding="utf-8"))
        for m in PARAGRAPH.finditer(flat):
            if _owner(flat, m.start()) != "DiT":
                continue
            section = PAPER["sections"].get(m.group("section"))
            names = [] if section is None else [section["title"], *section["paragraphs"]]
            if not any(n.lower().startswith(m.group("name").strip().lower()) for n in names):
                wrong.append(f"{path.relative_to(ROOT)}: §{m.group('section')} *{m.group('name')}*")
    assert not wrong, "these name a paragraph that is not in the DiT section cited:\n  " + "\n  ".join(wrong)


@pytest.mark.parametrize("rule", PAPER["misplaced"], ids=lambda r: r["why"][:40])
def test_claims_sit_next_to_the_right_citation(rule):
    claim, wrong_cite = re.compile(rule["claim"]), re.compile(rule["wrong"])
    bad = []
    for path in _files():
        flat = _flat(path.read_text(encoding="utf-8"))
        for m in wrong_cite.finditer(flat):
            # The sentence around the citation: at most 200 characters either side, cut at a sentence's
            # end or a docstring's quotes.
            before = re.split(r'[.!?]\s+(?=[A-Z*#|(`$])|"""', flat[max(0, m.start() - 200) : m.start()])[-1]
            after = re.split(r'[.!?]\s+(?=[A-Z*#|(`$])|"""', flat[m.end() : m.end() + 200])[0]
            if claim.search(before + m.group(0) + after):
                bad.append(f"{path.relative_to(ROOT)}: ...{(before + m.group(0) + after).strip()[:200]}...")
    assert not bad, f"{rule['why']}:\n  " + "\n  ".join(bad)
