"""PDF 版与学生版 PDF：排版日志、文字、字体与样页（由 scripts/test.sh 在构建完两本 PDF 之后运行）。

    EDITION=pdf bash scripts/build_book.sh           # _build/pdf/book.pdf
    EDITION=student-pdf bash scripts/build_book.sh   # _build/student/pdf/book.pdf
    pytest tests/pdf -q

PDF 没有构建时测试失败而不是跳过：CI 里少了 PDF 就是出了错。检查读者真正会遇到的问题：
缺字或豆腐块、伸出版心的行、未定义的引用（印成 ??）、公式没排版（漏出 $…$ 或 \\frac）、
章节或正文缺失、字体没嵌入（换一台机器打印就变样）、学生版漏出解答或丢了练习。
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# 要先构建两本 PDF（几分钟），所以不进快速测试层（-m "not slow"）；scripts/test.sh 在构建之后单独运行本目录
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "browser"))
sys.path.insert(0, str(ROOT / "book" / "_ext"))
sys.path.insert(0, str(ROOT / "scripts"))
import check_latex_log  # noqa: E402
import student_edition  # noqa: E402
from pages import toc_files  # noqa: E402

EDITIONS = {"full": ROOT / "_build" / "pdf", "student": ROOT / "_build" / "student" / "pdf"}
SCREENSHOTS = ROOT / "_build" / "screenshots" / "pdf"
_CJK_RUN = re.compile(r"[\u4e00-\u9fff，、。]{14,}")


def _source(doc: str) -> Path:
    return next(p for p in (ROOT / f"{doc}.md", ROOT / f"{doc}.ipynb") if p.is_file())


def _markdown(doc: str, student: bool = False) -> str:
    """文档的 Markdown 文字（笔记本取 Markdown 单元）；student=True 时先删掉解答。"""
    path = _source(doc)
    if path.suffix == ".md":
        text = path.read_text(encoding="utf-8")
        return student_edition.strip_markdown(text)[0] if student else text
    nb = json.loads(path.read_text(encoding="utf-8"))
    if student:
        nb = student_edition.strip_notebook(nb)[0]
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def _prose(text: str) -> str:
    """去掉代码块、公式、行内代码与 MyST 角色，只留正文。"""
    text = re.sub(r"^(`{3,}|~{3,}).*?^\1", " ", text, flags=re.S | re.M)
    text = re.sub(r"\$\$.*?\$\$|\$[^$\n]*\$|`[^`\n]*`|\{[a-z:-]+\}", " ", text, flags=re.S)
    return text


def title(doc: str) -> str:
    return next(line[2:].strip() for line in _markdown(doc).splitlines() if line.startswith("# "))


def sample_sentences(doc: str) -> list[str]:
    """每页取三句（第一、中间、最后一段纯中文），都不在解答里，两本 PDF 都该有。"""
    runs = _CJK_RUN.findall(_prose(_markdown(doc, student=True)))
    picked = [runs[0], runs[len(runs) // 2], runs[-1]] if runs else []
    return list(dict.fromkeys(picked))


def solution_snippets() -> list[str]:
    """只在解答里出现的中文片段：完整版里都该有，学生版里一个都不该有。"""
    out = []
    for doc in toc_files():
        rest = _prose(_markdown(doc, student=True))
        full = _prose(_markdown(doc))
        # 完整版比学生版多出来的文字就是解答（Markdown 块与笔记本的解答单元）
        extra = [r for r in _CJK_RUN.findall(full) if r not in rest]
        out += extra[:3]
    return out


def normalize(text: str) -> str:
    """pdftotext 的输出与源文件对齐：去掉全部空白（中文折行处会插入换行），统一几个字形相同的字符。"""
    text = text.replace("\u2011", "-").replace("\u30fb", "·").replace("\ufb01", "fi").replace("\ufb02", "fl")
    return re.sub(r"\s+", "", text)


def _run(*cmd: str) -> str:
    if shutil.which(cmd[0]) is None:
        pytest.fail(f"找不到 {cmd[0]}（poppler-utils missing）：请运行 WITH_TEX=1 bash scripts/setup.sh")
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module", params=sorted(EDITIONS))
def edition(request):
    """(版本名, PDF 路径, 每页文字的列表)。"""
    pdf = EDITIONS[request.param] / "book.pdf"
    if not pdf.is_file():
        cmd = "EDITION=pdf" if request.param == "full" else "EDITION=student-pdf"
        pytest.fail(f"没有找到 {pdf.relative_to(ROOT)}：请先运行 {cmd} bash scripts/build_book.sh")
    # 只取版心：A4（595×842 pt）上页眉（书名）在 y≈37–47 pt，页脚（节名与页码）在 y≈795–805 pt，
    # 正文在 75–770 pt 之间。不裁掉的话，跨页的一句话中间会夹着页脚，测试随分页时过时不过。
    body = ("-x", "0", "-y", "55", "-W", "596", "-H", "730")
    pages = _run("pdftotext", "-enc", "UTF-8", *body, str(pdf), "-").split("\f")
    return request.param, pdf, pages


def test_latex_log_is_clean(edition):
    """最后一遍 XeLaTeX 的日志：没有缺字、没有伸出版心 3pt 以上的行、没有未定义的引用或被替换的字体。"""
    name, pdf, _ = edition
    problems = check_latex_log.check_log((pdf.parent / "book.log").read_text(encoding="utf-8", errors="replace"))
    assert not any(problems.values()), f"{name}: {json.dumps(problems, ensure_ascii=False, indent=1)}"


def test_every_chapter_title_and_toc(edition):
    """每一章、每一节（含笔记本）的标题都在正文里，也都在目录里，编号就是书自己写的编号。"""
    name, _, pages = edition
    body = normalize("".join(pages))
    # 目录：从印着“目录”的一页，到前言正文的第一句之前
    toc_start = next(i for i, p in enumerate(pages) if "目录" in p)
    toc_end = _first_page(pages, sample_sentences("book/preface")[0]) - 1
    toc = normalize("".join(pages[toc_start:toc_end]))
    titles = [title(doc) for doc in toc_files()]
    assert not [t for t in titles if normalize(t) not in body], f"{name}: 正文里缺这些标题"
    assert not [t for t in titles if normalize(t) not in toc], f"{name}: 目录里缺这些标题"
    # LaTeX 不再自己编号：没有英文的 Part/Chapter，也没有“第 1 章”
    assert not re.search(r"\bPart [IVX]+\b|\bChapter \d|第\s*\d+\s*章\s*\n", "".join(pages[toc_start:toc_end])), name


@pytest.mark.parametrize("doc", toc_files())
def test_sample_sentences(doc, edition):
    """每一页的中文正文都印进了 PDF（第一、中间、最后一段各取一句）。"""
    name, _, pages = edition
    body = normalize("".join(pages))
    sentences = sample_sentences(doc)
    assert sentences, f"{doc}: 没找到可以抽查的中文句子"
    missing = [s for s in sentences if normalize(s) not in body]
    assert not missing, f"{name}: {doc} 的这些句子不在 PDF 里：{missing}"


def test_solutions_only_in_full_edition(edition):
    """完整版的解答紧跟练习；学生版一个解答也没有，练习的个数与编号却相同。"""
    name, _, pages = edition
    body = normalize("".join(pages))
    snippets = solution_snippets()
    assert len(snippets) >= 20, snippets
    found = [s for s in snippets if normalize(s) in body]
    if name == "full":
        assert found == snippets, f"完整版缺了解答：{sorted(set(snippets) - set(found))[:5]}"
    else:
        assert not found, f"学生版里有解答：{found[:5]}"
    exercises = sum(student_edition.count_exercises(_markdown(doc)) for doc in toc_files())
    numbers = set(re.findall(r"练习(\d+\.\d+|T\.\d+)（", body))
    assert len(numbers) == exercises, f"{name}: PDF 里有 {len(numbers)} 个练习标题，源文件里有 {exercises} 个"


def test_maths_typeset_no_raw_tex(edition):
    """公式由 LaTeX 排版：PDF 文字里没有漏出的 $…$、\\frac、\\tau 之类，也没有未解析引用的 ??。"""
    name, _, pages = edition
    text = "".join(pages)
    leaks = re.findall(r"\\(?:frac|tau|sum|mathbf|mathcal|begin|left|right)\b|\$\$|\?\?", text)
    assert not leaks, f"{name}: PDF 里漏出了没排版的 TeX：{leaks[:10]}"


def test_fonts_all_embedded(edition):
    """pdffonts：每个字体都嵌入了（emb = yes），换一台没有这些字体的电脑或印刷厂也一样。"""
    name, pdf, _ = edition
    rows = _run("pdffonts", str(pdf)).splitlines()[2:]
    assert rows, f"{name}: pdffonts 没有列出任何字体"
    # 列：name type encoding emb sub uni object ID；name 可能是 [none]，type 可能含空格
    not_embedded = [r for r in rows if re.search(r"\s(yes|no)\s+(yes|no)\s+(yes|no)\s+\d+\s+\d+\s*$", r)
                    and re.search(r"\s(yes|no)\s+(yes|no)\s+(yes|no)\s+\d+\s+\d+\s*$", r).group(1) != "yes"]
    assert not not_embedded, f"{name}: 这些字体没有嵌入：{not_embedded}"
    assert any("NotoSerifCJK" in r for r in rows) and any("NotoSansCJK" in r for r in rows), rows[:5]


def _first_page(pages: list[str], *needles: str, start: int = 0) -> int:
    """第一页（从 1 数起，从第 start 页之后找）同时含有全部 needles 的页码。"""
    for i, page in enumerate(pages[start:], start):
        if all(normalize(n) in normalize(page) for n in needles):
            return i + 1
    pytest.fail(f"PDF 里找不到同时含有 {needles} 的一页")


def _line_page(pages: list[str], pattern: str, start: int) -> int:
    """第 start 页之后，第一页有一整行匹配 pattern 的页码（标题、图题独占一行，正文里的交叉引用不会）。"""
    for i, page in enumerate(pages[start:], start):
        if any(re.fullmatch(pattern, line.strip()) for line in page.splitlines()):
            return i + 1
    pytest.fail(f"PDF 里找不到整行匹配 {pattern!r} 的一页")


def test_sample_pages_render(edition):
    """把公式页、代码页、插图页、流程图页渲染成 PNG（_build/screenshots/pdf/），并确认它们不是空白页。"""
    from PIL import Image, ImageStat

    name, pdf, pages = edition
    body = _first_page(pages, sample_sentences("book/preface")[0])   # 目录之后
    chosen = {
        "maths": _line_page(pages, r"4\.3 对比损失函数", start=body),
        "code": _first_page(pages, "def clip_loss(", start=body),
        "figure": _line_page(pages, r"图 1[:：].*时间线.*", start=body),
        "diagram": _first_page(pages, "B 张图像", "B 条文本", start=body),
    }
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for kind, number in chosen.items():
        prefix = SCREENSHOTS / f"{name}-{kind}"
        _run("pdftoppm", "-png", "-r", "80", "-singlefile", "-f", str(number), "-l", str(number), str(pdf), str(prefix))
        image = Image.open(f"{prefix}.png").convert("L")
        assert ImageStat.Stat(image).stddev[0] > 20, f"{name}: 第 {number} 页（{kind}）渲染出来几乎是空白"
