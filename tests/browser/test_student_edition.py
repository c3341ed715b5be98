"""学生版（EDITION=student bash scripts/build_book.sh）里没有任何解答；完整版的解答仍在，且默认折叠。

解答文字取自源文件本身（Markdown 的 {solution} 块、笔记本里的解答单元），每个解答取一段不在其余正文里出现的中文，
再到两个版本里去找：学生版的页面文字、下载用的源文件和搜索索引里都不应有它；完整版的页面里应当有它，但要点开才看得见。
"""
from __future__ import annotations

import json
import re
import sys

import pytest

from pages import HTML_DIR, ROOT, LoopbackServer, toc_files

sys.path.insert(0, str(ROOT / "book" / "_ext"))
import student_edition  # noqa: E402

STUDENT_DIR = ROOT / "_build" / "student" / "html"
_CJK_RUN = re.compile(r"[\u4e00-\u9fff]{8,}")

# 正文的全部文字，包括折叠起来、看不见的部分（学生版里连藏起来的解答也不许有）
ARTICLE_TEXT_JS = """() => (document.querySelector('article.bd-article') || document.body).textContent"""


def _runs(text: str) -> set[str]:
    text = re.sub(r"\$\$.*?\$\$|\$[^$\n]*\$|`[^`\n]*`|\{[a-z]+\}", " ", text, flags=re.S)
    return {m[:8] for m in _CJK_RUN.findall(text)}


def _solution_texts(path) -> list[str]:
    """一个源文件里每个解答的文字（Markdown 块的正文，或笔记本解答单元的源码）。"""
    if path.suffix == ".md":
        return [m.group(0) for m in student_edition._SOLUTION_BLOCK.finditer(path.read_text(encoding="utf-8"))]
    nb = json.loads(path.read_text(encoding="utf-8"))
    stripped, _ = student_edition.strip_notebook(json.loads(json.dumps(nb)))
    kept = {"".join(c["source"]) for c in stripped["cells"]}
    texts = [m.group(0) for c in nb["cells"] if c["cell_type"] == "markdown"
             for m in student_edition._SOLUTION_BLOCK.finditer("".join(c["source"]))]
    # 被删掉或被删去一部分的单元（其中与练习题面相同的文字会在 _snippets 里被排除）
    texts += ["".join(c["source"]) for c in nb["cells"] if "".join(c["source"]) not in kept]
    return texts


def _snippets():
    """{文档名: [只出现在解答里的 8 字中文片段, 每个解答至多一个]}。"""
    out = {}
    for doc in toc_files():
        path = next((p for p in (ROOT / f"{doc}.md", ROOT / f"{doc}.ipynb") if p.is_file()), None)
        if path is None:
            continue
        if path.suffix == ".md":
            rest = student_edition.strip_markdown(path.read_text(encoding="utf-8"))[0]
        else:
            nb, _ = student_edition.strip_notebook(json.loads(path.read_text(encoding="utf-8")))
            rest = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
        others = _runs(rest)
        picked = []
        for text in _solution_texts(path):
            candidates = sorted(r for r in _runs(text) if not any(r in o or o in r for o in others))
            if candidates:
                picked.append(candidates[0])
        if picked:
            out[doc] = picked
    return out


SNIPPETS = _snippets()


@pytest.fixture(scope="module")
def student_site():
    if not (STUDENT_DIR / "index.html").is_file():
        pytest.fail(f"没有找到学生版：应有 {STUDENT_DIR}/index.html；请先运行 "
                    "EDITION=student REUSE_EXECUTED=1 bash scripts/build_book.sh")
    with LoopbackServer(STUDENT_DIR) as server:
        yield server


def test_book_has_solutions_to_look_for():
    assert sum(len(v) for v in SNIPPETS.values()) >= 30, SNIPPETS


def test_no_solution_in_student_files(student_site):
    """学生版的每个文件（页面、下载用的源文件、搜索索引）都不含解答片段，也没有解答的 CSS 类。"""
    files = [p for p in STUDENT_DIR.rglob("*") if p.suffix in {".html", ".md", ".ipynb", ".js", ".txt"}
             and "_static" not in p.parts]
    text = {p: p.read_text(encoding="utf-8", errors="replace") for p in files}
    leaks = [(doc, s, p.relative_to(STUDENT_DIR).as_posix()) for doc, snippets in SNIPPETS.items()
             for s in snippets for p, t in text.items() if s in t]
    assert not leaks, f"学生版里找到了解答文字（文档、片段、文件）：{leaks[:10]}"
    pages = [p for p in files if p.suffix == ".html"]
    assert not [p.name for p in pages if 'class="solution' in text[p]], "学生版里还有解答框"


_CAPTION = re.compile(r'<span class="caption-number">(练习 [^<]*?)\s*</span>')


@pytest.mark.parametrize("doc", sorted(SNIPPETS))
def test_exercise_numbers_are_the_same(doc, student_site):
    """两个版本的每一页，练习的编号一个不差（按文件比，快；浏览器检查见下一个测试）。"""
    full = _CAPTION.findall((HTML_DIR / f"{doc}.html").read_text(encoding="utf-8"))
    student = _CAPTION.findall((STUDENT_DIR / f"{doc}.html").read_text(encoding="utf-8"))
    assert full and student == full, f"{doc}: 完整版 {full}，学生版 {student}"


# 浏览器里逐页打开两个版本很慢；挑一页 Markdown、两页笔记本（含可运行的解答单元）在浏览器里看，其余靠上面的文件检查
BROWSER_DOCS = [d for d in ("book/ch09_faq", "notebooks/04_infonce", "notebooks/06_digits") if d in SNIPPETS]


@pytest.mark.parametrize("doc", BROWSER_DOCS)
def test_student_page_keeps_exercises_without_solutions(doc, browser, site, student_site):
    context = browser.new_context(locale="zh-CN")
    try:
        page = context.new_page()
        counts = {}
        for name, server in (("full", site), ("student", student_site)):
            page.goto(f"{server.url}/{doc}.html", wait_until="load")
            body = page.evaluate(ARTICLE_TEXT_JS)
            counts[name] = page.locator(".exercise .caption-number").all_inner_texts()   # ["练习 3.1 ", ...]
            found = [s for s in SNIPPETS[doc] if s in body]
            if name == "student":
                assert not found, f"{doc}: 学生版页面上显示了解答：{found}"
                assert page.locator(".solution").count() == 0, f"{doc}: 学生版页面上还有解答框"
            else:
                assert len(found) == len(SNIPPETS[doc]), f"{doc}: 完整版缺了解答：{set(SNIPPETS[doc]) - set(found)}"
        assert counts["student"] == counts["full"] and counts["full"], \
            f"{doc}: 两个版本的练习与编号应当相同：{counts}"
    finally:
        context.close()


def test_full_edition_solutions_are_collapsed(browser, site):
    """完整版：解答默认折叠（看不见），点开后才显示。"""
    doc = "book/ch09_faq"
    context = browser.new_context(locale="zh-CN")
    try:
        page = context.new_page()
        page.goto(f"{site.url}/{doc}.html", wait_until="load")
        solutions = page.locator(".solution.dropdown")
        assert solutions.count() >= 3, f"{doc}: 解答应当是折叠的 dropdown"
        first = solutions.first
        snippet = SNIPPETS[doc][0]
        body = first.locator(".admonition-title ~ *").first
        assert not body.is_visible(), f"{doc}: 解答默认应折叠"
        first.locator("button.toggle-button").click()
        page.wait_for_timeout(300)
        assert body.is_visible(), f"{doc}: 点开后解答应可见"
        assert snippet in first.inner_text(), f"{doc}: 点开的解答里应有“{snippet}”"
    finally:
        context.close()


def test_full_edition_still_has_every_solution():
    """完整版的 HTML 文件里能找到每个解答片段（与学生版的检查互为对照，防止片段本身取错）。"""
    missing = [(doc, s) for doc, snippets in SNIPPETS.items() for s in snippets
               if s not in (HTML_DIR / f"{doc}.html").read_text(encoding="utf-8")]
    assert not missing, f"完整版里找不到这些解答片段：{missing[:10]}"
