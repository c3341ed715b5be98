"""全书术语与标点的统一（book/glossary.md 的“术语约定”，sec-glossary-conventions）。

检查 book/*.md 与每个笔记本的 Markdown 单元里的**文字**：代码块、行内代码、公式、网址、引用键、
指令的选项行和 HTML 注释都不查。每个文件一个测试用例，失败时逐条列出“文件:行号”。
"""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CJK = "\u3400-\u4dbf\u4e00-\u9fff"

# (名字, 正则, 该用的写法)
BANNED = [
    ("负例", re.compile("负例"), "负样本"),
    ("线性探测", re.compile("线性探测"), "线性探针"),
    ("批次大小", re.compile("批次大小"), "批大小"),
    ("余弦退火", re.compile("余弦退火"), "余弦衰减"),
    ("留出类别", re.compile("留出类别"), "留出组合"),
    ("multimodal large model", re.compile(r"multi-?modal\s+large\s+models?", re.I),
     "large multimodal model（LMM）"),
    ("中文里的 token", re.compile(r"(?<![A-Za-z_\-\[<./])tokens?(?![A-Za-z_\-\]>])", re.I), "词元"),
    ("ASCII 引号包着中文", re.compile(rf'"[^"\n]*[{CJK}][^"\n]*"'), "中文引号“…”"),
    ("半角括号包着中文", re.compile(rf"\([^()\n]*[{CJK}][^()\n]*\)"), "全角括号（…）"),
    ("中文后的半角括号英文注释", re.compile(rf"[{CJK}]\s?\((?=[^)]*[A-Za-z]{{3}})[A-Za-z][A-Za-z ,.'/&+\-]*\)"), "全角括号：对比学习（contrastive learning）"),
]
# 这些指令的内容是代码或公式，整块跳过；其余指令（练习、提示框、术语表……）的内容是文字。
CODE_DIRECTIVES = {"code-cell", "code-block", "code", "literalinclude", "math", "mermaid", "raw", "bibliography"}
STRIP = [
    re.compile(r"<!--.*?-->"),                        # HTML 注释
    re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$"),            # 行内公式
    re.compile(r"`[^`\n]*`"),                          # 行内代码、{ref}`…`、{cite}`…` 等角色
    re.compile(r"\]\([^)\s]*\)"),                      # Markdown 链接的地址部分
    re.compile(r"<https?://[^>]*>|https?://\S+"),      # 网址
    re.compile(r"\{[a-z:\-]+\}"),                      # 角色名
]
_FENCE = re.compile(r"^\s*(?P<fence>`{3,}|~{3,}|:{3,})(?P<info>.*)$")


def prose_lines(text: str):
    """逐行给出 (行号, 去掉代码、公式、网址后的文字)；代码块、公式块、选项行和术语约定表不给出。"""
    stack = []            # [(围栏字符, 长度, 是否代码)]
    in_math = in_table = False
    for no, line in enumerate(text.splitlines(), 1):
        if "terminology-table:start" in line:
            in_table = True
        if "terminology-table:end" in line:
            in_table = False
            continue
        m = _FENCE.match(line)
        if m:
            fence, info = m["fence"], m["info"].strip()
            top = stack[-1] if stack else None
            if top and not info and fence[0] == top[0] and len(fence) >= top[1]:
                stack.pop()
                continue
            if not (top and top[2]):  # 代码块里的围栏只是文字
                name = info[1:info.index("}")] if info.startswith("{") and "}" in info else None
                is_code = name is None or name in CODE_DIRECTIVES
                stack.append((fence[0], len(fence), is_code))
                continue
        if stack and stack[-1][2] or in_table:
            continue
        if line.strip() == "$$" or (line.strip().startswith("$$") and line.count("$$") == 1):
            in_math = not in_math
            continue
        if in_math or re.match(r"^\s*:[A-Za-z\-]+:", line):
            continue
        for pattern in STRIP:
            line = pattern.sub(" ", line)
        yield no, line


def find_hits(text: str):
    """[(行号, 名字, 原文片段, 该用的写法)]。"""
    hits = []
    for no, line in prose_lines(text):
        for name, pattern, use in BANNED:
            for m in pattern.finditer(line):
                if name == "中文里的 token" and (not re.search(f"[{CJK}]", line) or _allowed_token(line, m)):
                    continue
                hits.append((no, name, m.group(0), use))
    return hits


def _allowed_token(line: str, m: re.Match) -> bool:
    start = max(0, m.start() - 3)
    return line[start:m.end() + 1].startswith("词元（") or bool(re.search(rf"（[^（）{CJK}]*{m.group(0)}[^（）{CJK}]*）",
                                                                      line[max(0, m.start() - 40):m.end() + 40]))


def _sources():
    for path in sorted((ROOT / "book").glob("*.md")):
        yield path.relative_to(ROOT).as_posix()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        yield path.relative_to(ROOT).as_posix()


def _hits_in(rel: str):
    path = ROOT / rel
    if path.suffix == ".md":
        return [(f"{rel}:{no}", *rest) for no, *rest in find_hits(path.read_text(encoding="utf-8"))]
    nb = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "markdown":
            out += [(f"{rel}:单元 {i}:{no}", *rest) for no, *rest in find_hits("".join(cell["source"]))]
    return out


@pytest.mark.parametrize("rel", list(_sources()))
def test_no_banned_variants(rel):
    hits = _hits_in(rel)
    report = "\n".join(f"  {where}：{name}「{frag}」→ 应写作 {use}" for where, name, frag, use in hits)
    assert not hits, f"{rel} 有 {len(hits)} 处不合术语约定（见 book/glossary.md 的术语约定）：\n{report}"


@pytest.mark.parametrize("text,expected", [
    ("这里的负例很多。", ["负例"]),
    ("用线性探测评估；批次大小为 64；余弦退火；留出类别。", ["线性探测", "批次大小", "余弦退火", "留出类别"]),
    ("a multimodal large model is", ["multimodal large model"]),
    ("每个 token 对应一个字。", ["中文里的 token"]),
    ("他说\"你好\"。", ["ASCII 引号包着中文"]),
    ("对比学习 (contrastive learning) 是", ["中文后的半角括号英文注释"]),
    ("见上文(第 3 章)。", ["半角括号包着中文"]),
])
def test_detects_each_variant(text, expected):
    assert [name for _, name, _, _ in find_hits(text)] == expected


@pytest.mark.parametrize("text", [
    "负样本、线性探针、批大小、余弦衰减、留出组合。",
    "词元（token）是分词的单位；对比学习（contrastive learning）。",
    "调用 `tokenizer(\"你好\")` 与 `model.logit_scale`，见 {cite}`radford2021clip`。",
    "```python\nx = \"负例\"  # (中文)\n```",
    "$$\nf(\\text{负例})\n$$",
    "见 [文档](https://example.com/负例(1))。",
    "```{code-cell} python\nprint(\"批次大小\")\n```",
    ":label: ex-ch02-token",
    "token\n  分词后的最小单位。",
    "<!-- terminology-table:start -->\n| 负样本 | 负例 |\n<!-- terminology-table:end -->",
    "large multimodal model (LMM) is used in English prose; multimodal large language model (MLLM).",
    "图像特征 (B, 16, 64) 是张量形状。",
])
def test_ignores_code_maths_urls_and_allowed_forms(text):
    assert find_hits(text) == []


def test_reports_line_numbers():
    assert [no for no, *_ in find_hits("第一行\n```python\n负例\n```\n第五行有负例")] == [5]
