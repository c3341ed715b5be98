"""书里的节号写在标题里（“# 6.5 …”“## 6.5.1 …”）：全书不能有两页用同一个号，页内的小节号要以本页的号开头。"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "browser"))
from pages import toc_files  # noqa: E402

NUMBERED = re.compile(r"^(#{1,3}) (\d+(?:\.\d+)+) ")


def _headings(path: Path) -> list[tuple[int, str]]:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    else:
        text = path.read_text(encoding="utf-8")
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)   # 代码块里的 # 不是标题
    return [(len(m.group(1)), m.group(2)) for m in map(NUMBERED.match, text.splitlines()) if m]


def test_section_numbers_are_unique_and_nested():
    owner, problems = {}, []
    for doc in toc_files():
        path = next((ROOT / f"{doc}{ext}" for ext in (".md", ".ipynb") if (ROOT / f"{doc}{ext}").is_file()), None)
        if path is None:
            continue
        heads = _headings(path)
        top = next((num for level, num in heads if level == 1), None)
        for level, num in heads:
            if num in owner and owner[num] != doc:
                problems.append(f"{num} 同时出现在 {owner[num]} 与 {doc}")
            owner.setdefault(num, doc)
            if top and level > 1 and not num.startswith(top + "."):
                problems.append(f"{doc}: 小节 {num} 不在本页的 {top} 之下")
    assert not problems, "\n".join(problems)
