"""book/references.bib 的体检：每条有 arXiv 编号或 DOI、格式正确、无重复键；book/ 与 notebooks/ 里引用的键都存在。"""
import json
import re
from pathlib import Path

import pybtex.database

ROOT = Path(__file__).resolve().parents[2]
BIB = ROOT / "book" / "references.bib"
ARXIV_ID = re.compile(r"^(\d{4}\.\d{4,5}|[a-z\-]+(\.[A-Z]{2})?/\d{7})$")
DOI = re.compile(r"^10\.\d{4,9}/\S+$")
# {cite}`a,b`、{cite:p}`a`、{cite:t}`a` 等角色。
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")


def _entries():
    return pybtex.database.parse_file(str(BIB)).entries


def test_bib_parses_and_keys_are_unique():
    text = BIB.read_text(encoding="utf-8")
    keys = re.findall(r"^@\w+\{([^,\s]+),", text, flags=re.M)
    dupes = {k for k in keys if keys.count(k) > 1}
    assert not dupes, f"重复的 BibTeX 键：{sorted(dupes)}"
    assert len(_entries()) == len(keys) > 0


def test_every_entry_has_arxiv_id_or_doi():
    bad = []
    for key, entry in _entries().items():
        f = {k.lower(): v for k, v in entry.fields.items()}
        eprint, doi = f.get("eprint"), f.get("doi")
        ok_arxiv = eprint is not None and ARXIV_ID.match(eprint) and f.get("archiveprefix", "").lower() == "arxiv"
        ok_doi = doi is not None and DOI.match(doi)
        if not (ok_arxiv or ok_doi):
            bad.append(key)
        if not f.get("title") or not entry.persons.get("author") or not re.fullmatch(r"\d{4}", f.get("year", "")):
            bad.append(f"{key}（缺 title/author/year）")
    assert not bad, f"这些条目缺少合法的 eprint+archivePrefix={{arXiv}} 或 doi：{bad}"


def _cited_keys():
    keys = {}
    for path in list((ROOT / "book").rglob("*.md")) + list((ROOT / "notebooks").rglob("*.ipynb")):
        if "_build" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".ipynb":
            text = "\n".join("".join(c.get("source", "")) for c in json.loads(text).get("cells", []))
        for group in CITE.findall(text):
            for key in group.split(","):
                keys.setdefault(key.strip(), set()).add(str(path.relative_to(ROOT)))
    return keys


def test_every_cited_key_exists():
    entries = _entries()
    cited = _cited_keys()
    assert cited, "书中应至少有一处 {cite}"
    missing = {k: sorted(v) for k, v in cited.items() if k not in entries}
    assert not missing, f"这些引用键在 references.bib 中不存在：{missing}"


def test_cite_regex_sees_all_roles():
    sample = "见 {cite}`a,b` 与 {cite:p}`c` 以及 {cite:t}`d`"
    assert [k for g in CITE.findall(sample) for k in g.split(",")] == ["a", "b", "c", "d"]
