"""PDF 版的排版设置（``EDITION=pdf bash scripts/build_book.sh``，见教学指南 sec-teaching-editions）。

Jupyter Book 1 用 Sphinx 的 LaTeX 构建器加 sphinx-jupyterbook-latex（目录两部分变成两个 \\part、
笔记本的输入输出单元各自成块），XeLaTeX 排版。这里把后者为英文书准备的部分换成中文书的：

1. **ctex + Noto CJK。** ctex 宏包（CJK 断行、标点挤压、中文的“目录”“图”“表”）配 Debian
   ``fonts-noto-cjk`` 的思源宋体/黑体，西文用同一套字体自带的西文字形（有正文里的 τ、ε），
   代码用等宽的 Noto Sans Mono CJK（汉字恰好两个西文宽，与 tests/book/test_code_width.py 的 88 列算法一致），
   公式用 Latin Modern Math；三者都没有的个别字符（✔、ᾱ ……）在构建时自动改用 DejaVu Sans。
   去掉 sphinx-jupyterbook-latex 加的 ``ucharclasses``（与 xeCJK 抢同一套字符类机制）、
   英文的 “Contents” 和它的 ``jupyterBook.cls``（要 texlive-fonts-extra 里的 bbm，装不起）。
2. **编号照抄标题。** 章节号写在标题里（“3.3 CLIP 的训练过程”），所以 LaTeX 不再自动编号
   （secnumdepth = -2，部分与章都不编号），目录里显示的就是书自己的编号；图、公式与 HTML 版一样全书连续编号。
3. **代码换行。** 代码与输出里放不下的行在版心处折行（``verbatimforcewraps``），不会冲出页面。
4. **mermaid 图**由 mermaid_pdf.py 用 HTML 版同一份 mermaid 与系统 Chromium 预先画成 PDF。
5. **网址**在印刷版里作脚注；不生成索引（书里没有 index 条目）。

只在 LaTeX 构建器下生效；HTML 构建照旧。
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging
from sphinx.util.texescape import escape as tex_escape

logger = logging.getLogger(__name__)

# ctex：UTF8、不用它预设的字体（fontset=none，下面逐一指定），全角标点（相邻标点挤压，行首行尾禁则由 xeCJK 处理）
FONTENC = r"\usepackage[UTF8,fontset=none,punct=quanjiao,linespread=1.3]{ctex}"
# 西文正文也用思源（Noto CJK）自带的西文字形：它有希腊字母（正文里的 τ、ε），Latin Modern 没有
FONTPKG = r"""
\setmainfont{Noto Serif CJK SC}[BoldFont={Noto Serif CJK SC Bold}, ItalicFont={Noto Serif CJK SC},
  ItalicFeatures={FakeSlant=0.15}, BoldItalicFont={Noto Serif CJK SC Bold}, BoldItalicFeatures={FakeSlant=0.15}]
\setsansfont{Noto Sans CJK SC}[BoldFont={Noto Sans CJK SC Bold}, ItalicFont={Noto Sans CJK SC},
  ItalicFeatures={FakeSlant=0.15}]
\setmonofont{Noto Sans Mono CJK SC}[BoldFont={Noto Sans Mono CJK SC Bold}, ItalicFont={Noto Sans Mono CJK SC},
  ItalicFeatures={FakeSlant=0.15}]
\setCJKmainfont{Noto Serif CJK SC}[BoldFont={Noto Serif CJK SC Bold}, ItalicFont={Noto Serif CJK SC},
  ItalicFeatures={FakeSlant=0.15}]
\setCJKsansfont{Noto Sans CJK SC}[BoldFont={Noto Sans CJK SC Bold}]
\setCJKmonofont{Noto Sans Mono CJK SC}[BoldFont={Noto Sans Mono CJK SC Bold}, ItalicFont={Noto Sans Mono CJK SC},
  ItalicFeatures={FakeSlant=0.15}]
\setCJKfamilyfont{zhhei}{Noto Sans CJK SC}[BoldFont={Noto Sans CJK SC Bold}]
"""
PREAMBLE = r"""
% ---- zh_latex（book/_ext/zh_latex.py）----
\usepackage{unicode-math}
\setmathfont{Latin Modern Math}
\setmathfont{Latin Modern Math}[version=bold, FakeBold=2]
% 思源字体里没有的少数字符（✔、ᾱ、😺 ……）改用 DejaVu Sans；清单由构建时扫描 book.tex 生成（见 write_fallbacks）
\usepackage{newunicodechar}
\newfontfamily\zhfallbackfont{DejaVu Sans}
\newcommand\zhfallback[1]{\ifmmode\text{\zhfallbackfont\char#1\relax}\else{\zhfallbackfont\char#1\relax}\fi}
\InputIfFileExists{zh_fallback.def}{}{}
% 02_diffusion 里的 \varepsilon^\*：MathJax 把 \* 当作可断行的乘号，LaTeX 的 \* 却不能直接作上标
\renewcommand{\*}{\ast}
\setlength{\headheight}{15pt}
\renewcommand{\contentsname}{目录}
% 章节号写在标题里：LaTeX 不再编号，目录照抄标题
\setcounter{secnumdepth}{-2}
\setcounter{tocdepth}{1}
% 标题用黑体
\usepackage{titlesec}
\titleformat{\chapter}[display]{\normalfont\sffamily\CJKfamily{zhhei}\huge\bfseries}{}{0pt}{}
\titleformat{\section}{\normalfont\sffamily\CJKfamily{zhhei}\Large\bfseries}{}{0pt}{}
\titleformat{\subsection}{\normalfont\sffamily\CJKfamily{zhhei}\large\bfseries}{}{0pt}{}
\titleformat{\subsubsection}{\normalfont\sffamily\CJKfamily{zhhei}\normalsize\bfseries}{}{0pt}{}
\titlespacing*{\chapter}{0pt}{0pt}{24pt}
% sphinx-jupyterbook-latex 的笔记本单元：输入浅灰底，输出左缩进、白底细框
\usepackage[strict]{changepage}
\newenvironment{sphinxVerbatimInput}
  {\sphinxsetup{VerbatimColor={RGB}{246,246,246},VerbatimBorderColor={RGB}{204,204,204}}}{}
\newenvironment{sphinxVerbatimOutput}
  {\sphinxsetup{VerbatimColor={RGB}{255,255,255},VerbatimBorderColor={RGB}{230,230,230}}%
   \begin{adjustwidth}{1.5em}{}}
  {\end{adjustwidth}}
% 中文段落不要段间空行（Sphinx 默认 parskip 为 0，这里只确保首行缩进两字）
\setlength{\parindent}{2em}
% 表格：tabulary 的列至少 4 个汉字宽，不会被挤成一字一行
\setlength{\tymin}{4em}
% 行内代码（表格里的 cn-clip-vit-b-16、image_features）也可以在连字符、下划线后折行
\makeatletter
\usepackage{etoolbox}
\renewcommand*{\sphinxhyphenininlineliteral}[1]{-\penalty\exhyphenpenalty\hskip\z@skip}
\protected\def\zhunderscore{\textunderscore\penalty\exhyphenpenalty\hskip\z@skip}
\patchcmd{\sphinxupquote}{\let\sphinxhyphen\sphinxhyphenininlineliteral}
  {\let\sphinxhyphen\sphinxhyphenininlineliteral\let\_\zhunderscore}{}
  {\PackageError{zh_latex}{sphinxupquote changed, cannot patch underscores}{see book/_ext/zh_latex.py}}
% 练习、解答等框里的代码块：Sphinx 只在“剩下的版面放得下”时才给它再套一层框，可在框里这个判断不可靠，
% 长代码会整块冲出页底（压住页脚）。这里让框里的代码一律不再套框，逐行排，外框可以在任意行间分页
\patchcmd{\endsphinxVerbatim}{\pagetotal+\pagedepth>\pagegoal}{\pagetotal+\pagedepth>-\maxdimen}{}
  {\PackageError{zh_latex}{sphinxVerbatim changed, cannot patch nested framing}{see book/_ext/zh_latex.py}}
\makeatother
% 行内公式在逗号后也可以折行（表格窄列里的 $\mathcal{L}_{I\to T},\ \mathcal{L}_{T\to I}$），代价同二元运算符
\AtBeginDocument{%
  \edef\zhmathcomma{\Umathcharnum\the\Umathcodenum`\,\relax}%
  \begingroup\lccode`\~=`\,\lowercase{\endgroup\def~}{\zhmathcomma\penalty\binoppenalty}%
  \mathcode`\,="8000\relax}
% 文献表接在“参考文献”一章的说明之后（BibliographyHome），不另起一章、不另进目录
\makeatletter
\renewenvironment{sphinxthebibliography}[1]
  {\begingroup\def\chapter*##1{}\let\@mkboth\@gobbletwo\begin{thebibliography}{#1}}
  {\end{thebibliography}\endgroup}
\makeatother
% 长网址、长英文标识符可以在任意字符处断开
\usepackage{xurl}
\hypersetup{pdfencoding=auto, psdextra}
"""
SPHINXSETUP = ",".join([
    "verbatimwrapslines=true",      # 代码行在空格与标点处折行
    "verbatimforcewraps=true",      # 没有可折处的长行（如长数字串）也强行折
    "verbatimmaxunderfull=1",
    "verbatimhintsturnover=true",   # 跨页时标出“续上页”
    "TitleColor={RGB}{0,0,0}",
    "InnerLinkColor={RGB}{0,70,140}",
    "OuterLinkColor={RGB}{0,70,140}",
    "hmargin={22mm,22mm}",
    "vmargin={25mm,25mm}",
])


def _configure(app, config) -> None:
    """config-inited（在 sphinx-jupyterbook-latex 之后）：换成中文书的 LaTeX 设置。"""
    config.latex_engine = "xelatex"
    # jupyterBook.cls 要 bbm（texlive-fonts-extra）等；用 Sphinx 自带的 manual 类，单元样式在 PREAMBLE 里补
    config.latex_theme = "manual"
    config.latex_use_xindy = False
    config.latex_show_urls = "footnote"
    config.latex_show_pagerefs = False
    elements = dict(config.latex_elements or {})
    elements.update({
        "papersize": "a4paper",
        "pointsize": "10pt",
        "extraclassoptions": "openany,oneside",
        "cmappkg": "",
        "fontenc": FONTENC,
        "fontpkg": FONTPKG,
        "babel": "",
        "polyglossia": "",
        "fncychap": "",
        "fvset": r"\fvset{fontsize=\small,formatcom=\xeCJKVerbAddon}",
        "sphinxsetup": SPHINXSETUP,
        # sphinx-jupyterbook-latex 加的 preamble（ucharclasses、英文 Contents）整个换掉
        "preamble": PREAMBLE,
        "makeindex": "",
        "printindex": "",
        "figure_align": "H",
        "extrapackages": r"\usepackage{float}",
    })
    config.latex_elements = elements
    # mermaid：LaTeX 构建器调用 mermaid_cmd -i 源文件 -o 图.pdf
    here = Path(__file__).resolve().parent
    vendor = Path(app.srcdir) / "book" / "_vendor" / "mermaid"
    init = {k: v for k, v in (config.mermaid_init_config or {}).items() if k != "startOnLoad"}
    config.mermaid_cmd = shlex.join([sys.executable, str(here / "mermaid_pdf.py")])   # 配置项的类型是 str
    config.mermaid_params = ["--vendor", str(vendor), "--config", json.dumps(init, ensure_ascii=False)]


# 正文、标题与代码三种字体共同的字符集之外的字符，改用这个字体（Debian fonts-dejavu-core）
FALLBACK_FAMILY = "DejaVu Sans"
PRIMARY_FAMILIES = ("Noto Serif CJK SC", "Noto Sans CJK SC", "Noto Sans Mono CJK SC")


def font_charset(family: str) -> set[int]:
    """fontconfig 找到的字体文件里有字形的码位。"""
    import subprocess

    from fontTools.ttLib import TTFont

    found = subprocess.run(["fc-match", "-f", "%{family}\n%{file}\n%{index}", family],
                           capture_output=True, text=True, check=True).stdout.split("\n")
    if family not in found[0].split(","):
        raise RuntimeError(f"找不到字体 {family}（font not found），fc-match 给出的是 {found[0]}；"
                           "请运行 WITH_TEX=1 bash scripts/setup.sh")
    return set(TTFont(found[1], fontNumber=int(found[2] or 0), lazy=True).getBestCmap())


def write_fallbacks(app, exc) -> None:
    """build-finished：扫描 book.tex，为思源字体里没有的字符写 zh_fallback.def（newunicodechar）。"""
    if exc is not None or app.builder.format != "latex":
        return
    outdir = Path(app.outdir)
    used = set()
    for tex in outdir.glob("*.tex"):
        used |= {ord(ch) for ch in tex.read_text(encoding="utf-8") if ord(ch) > 127}
    primary = set.intersection(*(font_charset(f) for f in PRIMARY_FAMILIES))
    fallback = font_charset(FALLBACK_FAMILY)
    lines, missing = [], []
    for code in sorted(used - primary):
        if code in fallback:
            lines.append(f'\\newunicodechar{{{chr(code)}}}{{\\zhfallback{{"{code:X}}}}}')
        else:
            missing.append(f"U+{code:04X} {chr(code)}")
    (outdir / "zh_fallback.def").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if missing:
        logger.warning(f"这些字符在 {PRIMARY_FAMILIES[0]} 与 {FALLBACK_FAMILY} 里都没有字形（missing glyph）："
                       + "，".join(missing))


def _label(docname: str, node_id: str) -> str:
    return rf"\phantomsection\label{{\detokenize{{{docname}:{node_id}}}}}"


def _ancestors(node):
    node = node.parent
    while node is not None:
        yield node
        node = node.parent


class PrefaceChapter(SphinxPostTransform):
    """前言（目录的根文档）在 PDF 里是一章：标题“前言”进目录和页眉，小节是真正的 \\section。

    sphinx-jupyterbook-latex 把根文档的小节压平成加大加粗的一行字（不进目录、丢掉小节的标签）；
    这里在它之前（优先级 700）把每个小节的标题换成 \\section/\\subsection 加原来的标签，
    并在开头放一个 \\chapter（secnumdepth 已设为不编号）。
    """

    default_priority = 690
    formats = ("latex",)

    def run(self, **kwargs) -> None:
        root = self.config.root_doc
        if self.app.project.path2doc(self.document["source"]) != root:
            return
        sections = [s for s in self.document.findall(nodes.section)
                    if s.get("docname") == root and "header_level" in s]
        if not sections:
            return
        top = sections[0]
        # 前面有 (label)= 的小节，Sphinx 已在目标处写过 \label，不能再写一次
        targets = {t["refid"] for t in self.document.findall(nodes.target) if t.get("refid")}
        for sect in sections[1:]:
            if not isinstance(sect[0], nodes.title):
                continue
            # 真实的嵌套深度（sphinx-jupyterbook-latex 的 header_level 对并列的小节也递增，不能用）
            depth = sum(1 for a in _ancestors(sect) if isinstance(a, nodes.section) and a.get("docname") == root)
            command = ["section", "subsection", "subsubsection"][min(depth, 3) - 1]
            title = tex_escape(sect[0].astext(), "xelatex")
            labels = "".join(_label(root, i) for i in sect["ids"] if i not in targets)
            sect[0].replace_self(nodes.raw("", rf"\{command}{{{title}}}{labels}" + "\n", format="latex"))
        chapter = tex_escape(top[0].astext(), "xelatex") if isinstance(top[0], nodes.title) else "前言"
        labels = "".join(_label(root, i) for i in top["ids"] if i not in targets)
        top.insert(1, nodes.raw("", rf"\chapter{{{chapter}}}{labels}" + "\n", format="latex"))


class LatexLayout(SphinxPostTransform):
    """PDF 的版面细节：图片段落不缩进、表格用小一号字、跨页面的练习引用指向练习本身。"""

    default_priority = 25   # sphinx-exercise 在 22 改写同页的练习引用，这里补上跨页面的
    formats = ("latex",)

    def run(self, **kwargs) -> None:
        for para in list(self.document.findall(nodes.paragraph)):
            # 只含图的段落：正文首行缩进两字，图再占满版心就会多出 2em；拿出段落后 Sphinx 会加 \noindent
            if para.children and all(isinstance(c, nodes.image) for c in para.children):
                para.replace_self(list(para.children))
        for table in list(self.document.findall(nodes.table)):
            groups = list(table.findall(nodes.tgroup))
            cols = max((int(g.get("cols", 0)) for g in groups), default=0)
            size = "\\footnotesize" if cols >= 5 else "\\small"
            parent = table.parent
            parent.insert(parent.index(table), nodes.raw("", f"\\begingroup{size}%\n", format="latex"))
            parent.insert(parent.index(table) + 1, nodes.raw("", "\\endgroup%\n", format="latex"))
        self._exercise_references()

    def _exercise_references(self) -> None:
        """``{ref}`` 到别的页面里的练习：sphinx-exercise 的标签是 exercise:<label>，不是 <文档>:<label>。"""
        from sphinx.addnodes import number_reference
        from sphinx_exercise.nodes import exercise_enumerable_node, exercise_latex_number_reference

        registry = getattr(self.env, "sphinx_exercise_registry", {})
        for ref in list(self.document.findall(number_reference)):
            label = ref.get("refuri", "").rpartition("#")[2] or ref.get("refid", "")
            target = registry.get(label, {}).get("node")
            if isinstance(target, exercise_enumerable_node):
                new = exercise_latex_number_reference()
                new["refid"] = label
                new += ref.children
                ref.replace_self(new)


class BibliographyHome(SphinxPostTransform):
    """文献表放回“参考文献”那一章（{bibliography} 所在的文档），而不是 Sphinx 默认的全书末尾另起一章。

    Sphinx 的 BibliographyTransform（优先级 750）把全部文献收成一个 thebibliography 接在全书最后，
    书里于是有一个只有两段说明的“参考文献”章、再加一个真正列文献的同名章。这里把它挪回原处；
    PREAMBLE 里的 sphinxthebibliography 也不再另起一章、另进目录。
    """

    default_priority = 760
    formats = ("latex",)

    def run(self, **kwargs) -> None:
        from sphinx import addnodes
        from sphinx.builders.latex.nodes import thebibliography

        domain = self.env.get_domain("cite")
        homes = sorted({key.docname for key in getattr(domain, "bibliographies", {})})
        bibs = [n for n in self.document.children if isinstance(n, thebibliography)]
        if not homes or not bibs:
            return
        for start in self.document.findall(addnodes.start_of_file):
            if start.get("docname") == homes[0]:
                section = next(start.findall(nodes.section), None)
                if section is not None:
                    for bib in bibs:
                        bib.parent.remove(bib)
                        section += bib
                return


def _latex_visit_mermaid(self, node) -> None:
    """mermaid 图居中、按 0.8 倍印刷（图里的 16 px 字约合 10 pt，与正文一样大），宽高不超过版心。"""
    from sphinxcontrib.mermaid import MermaidError, render_mm

    try:
        fname, _outfn = render_mm(self, node["code"], node["options"], "pdf", "mermaid")
    except MermaidError as exc:
        logger.warning(f"mermaid 图画不出来（mermaid render failed）：{exc}", location=node)
        raise nodes.SkipNode from exc
    self.body.append("\n\n\\begin{center}\\sphinxincludegraphics[scale=0.8]{%s}\\end{center}\n\n" % fname)
    raise nodes.SkipNode


def _builder_inited(app) -> None:
    """builder-inited（在 sphinx-jupyterbook-latex 之后）：图与公式全书连续编号，同 HTML 版；mermaid 图居中。"""
    if app.builder.format != "latex":
        return
    app.config.numfig_secnum_depth = 0
    from sphinxcontrib.mermaid import mermaid

    app.add_node(mermaid, override=True, latex=(_latex_visit_mermaid, None))


def setup(app):
    app.connect("config-inited", _configure, priority=900)
    app.connect("builder-inited", _builder_inited, priority=900)
    app.connect("build-finished", write_fallbacks)
    app.add_post_transform(PrefaceChapter)
    app.add_post_transform(LatexLayout)
    app.add_post_transform(BibliographyHome)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
