"""离线包 _build/clipedu-book-offline.zip：在没有网络的教室与机房里用这本书（见教学指南 sec-teaching-editions）。

    python scripts/make_offline.py            # 完整版或 PDF 版构建完后由 scripts/build_book.sh 自动调用

包里只有一个顶层目录 clipedu-book-offline/：

- ``html/``：网页版（_build/html 的副本），双击 ``html/index.html`` 即可阅读，不需要服务器；
- ``notebooks/``：仓库里不带输出的笔记本，对着装好的 clipedu 从头运行；
- ``pdf/``：``book.pdf``（完整版）与 ``book-student.pdf``（学生版，没有解答），构建过哪个放哪个；
- ``wheels/``：clipedu 的 wheel（``pip wheel --no-deps``）；
- ``离线使用说明.md``：怎样在有网络的机器上备好依赖，再在教室里 ``pip install --no-index`` 安装。

网页从 ``file://`` 打开时，浏览器把每个本地文件当作单独的来源（origin "null"），实测（Chromium）：

- mermaid 画不出来：它是 ES 模块，``import`` 本地文件被 CORS 拦下；
- 搜索能用（searchindex.js 用普通 script 标签加载），但 Sphinx 还要 ``fetch`` 每个结果页来显示摘要，
  这一步同样被拦，控制台报错；
- MathJax 的 CHTML 字体在 Chromium 里能加载，但 Firefox 只放行同一目录及其子目录里的本地文件，
  页面在 book/、notebooks/ 下，字体在 _static/ 下，就加载不到。

离线包里的网页因此改三处，其余与 _build/html 逐字节相同：

1. mermaid 图在打包时就画成内联 SVG（book/_ext/mermaid_pdf.py，与网页版同一份 mermaid），
   每页都不再加载 mermaid 模块；
2. MathJax 换成同一版本的 SVG 输出（``tex-svg-full.js``）：字形画成路径，不需要网页字体；
3. 搜索结果的摘要只在 http(s) 下取（``SHOW_SEARCH_SUMMARY``），file:// 下只列标题，不报错。

tests/browser/test_offline.py 用无头 Chromium 从 file:// 打开解压后的网页检查搜索、公式与流程图。
"""
from __future__ import annotations

import argparse
import html as htmllib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import mermaid_pdf  # noqa: E402

TOP = "clipedu-book-offline"
_MERMAID_PRE = re.compile(r'<pre(?P<attrs>[^>]*)\sclass="mermaid(?P<cls>[^"]*)"(?P<rest>[^>]*)>(?P<code>.*?)</pre>', re.S)
_MERMAID_SCRIPT = re.compile(r'<script type="module">(?:(?!</script>).)*?import mermaid from(?:(?!</script>).)*</script>\s*',
                             re.S)
_SEARCH_SUMMARY = "SHOW_SEARCH_SUMMARY: true,"
_SEARCH_SUMMARY_OFFLINE = 'SHOW_SEARCH_SUMMARY: location.protocol !== "file:",'
_MATHJAX_CHTML = "mathjax/tex-chtml-full.js"
_MATHJAX_SVG = "mathjax/tex-svg-full.js"


def mermaid_config() -> dict:
    """_config.yml 里网页版用的 mermaid_init_config（去掉 startOnLoad）。"""
    import yaml

    cfg = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    init = cfg.get("sphinx", {}).get("config", {}).get("mermaid_init_config", {}) or {}
    return {k: v for k, v in init.items() if k != "startOnLoad"}


def make_file_url_safe(site: Path) -> dict:
    """就地改写 site 里的网页，使其从 file:// 打开也完整：mermaid 图内联成 SVG，MathJax 换 SVG 输出。"""
    pages = sorted(site.rglob("*.html"))
    found = []   # (页面, match)
    texts = {}
    for page in pages:
        text = page.read_text(encoding="utf-8")
        texts[page] = text
        found += [(page, m) for m in _MERMAID_PRE.finditer(text)]
    svgs = mermaid_pdf.render_svgs([htmllib.unescape(m.group("code")).strip() for _, m in found],
                                   site / "_static" / "mermaid", mermaid_config())
    by_page: dict[Path, list] = {}
    for (page, m), svg in zip(found, svgs):
        by_page.setdefault(page, []).append((m, svg))
    stats = {"mermaid": len(found), "mathjax_pages": 0}
    for page, text in texts.items():
        new = text
        for m, svg in reversed(by_page.get(page, [])):
            div = f'<div{m.group("attrs")} class="mermaid{m.group("cls")}"{m.group("rest")} data-processed="true">{svg}</div>'
            new = new[:m.start()] + div + new[m.end():]
        new = _MERMAID_SCRIPT.sub("", new)
        if _MATHJAX_CHTML in new:
            new = new.replace(_MATHJAX_CHTML, _MATHJAX_SVG)
            stats["mathjax_pages"] += 1
        if new != text:
            page.write_text(new, encoding="utf-8")
    if stats["mathjax_pages"] and not (site / "_static" / _MATHJAX_SVG).is_file():
        raise SystemExit(f"[make_offline] 网页里没有 {_MATHJAX_SVG}（MathJax SVG output missing）：请重新运行 scripts/setup.sh")
    options = site / "_static" / "documentation_options.js"
    text = options.read_text(encoding="utf-8")
    if _SEARCH_SUMMARY not in text:
        raise SystemExit(f"[make_offline] {options.name} 里没有 {_SEARCH_SUMMARY}（Sphinx changed）：请更新 make_offline.py")
    options.write_text(text.replace(_SEARCH_SUMMARY, _SEARCH_SUMMARY_OFFLINE), encoding="utf-8")
    return stats


def build_wheel(dest: Path) -> Path:
    """pip wheel --no-deps：在临时目录里构建，不在仓库里留下 build/ 与 egg-info。"""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, src / name)
        shutil.copytree(ROOT / "clipedu", src / "clipedu", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                        "-w", str(dest), str(src)], check=True)
    wheels = sorted(dest.glob("clipedu-*.whl"))
    if not wheels:
        raise SystemExit("[make_offline] pip wheel 没有生成 clipedu 的 wheel（wheel build failed）")
    return wheels[-1]


def instructions(wheel: str, pdfs: list[str]) -> str:
    pdf_lines = "\n".join(f"- `pdf/{name}`" for name in pdfs) or "- （这次构建没有生成 PDF）"
    return f"""# 离线使用说明

这个压缩包让你在没有网络的教室或机房里使用《多模态大模型：技术原理与实战》：读书、打印、运行全部笔记本。

## 包里有什么

- `html/`：网页版。双击 `html/index.html` 用浏览器打开即可，搜索、公式与流程图都不需要网络。
  如果学校的浏览器禁止打开本地文件里的脚本，就在 `html/` 的上一级目录运行一行命令，再打开 <http://127.0.0.1:8000/>：

  ```bash
  python3 -m http.server --directory html 8000
  ```
- `notebooks/`：不带输出的笔记本（与网页上每个笔记本页面“下载 .ipynb”得到的相同）。
- `pdf/`：可以打印的 PDF。
{pdf_lines}
- `wheels/{wheel}`：本书的库 `clipedu`。

## 在有网络的机器上备好依赖（只做一次）

找一台能上网、**操作系统与 Python 版本都和教室机器相同**的电脑，在解压后的目录里运行：

```bash
python3 -m pip download -d wheelhouse wheels/{wheel} "mplfonts>=0.0.8" jupyterlab ipywidgets six \\
    --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple
python3 -m pip download -d wheelhouse --no-deps "cn_clip>=1.5,<2"
```

第一条按 `clipedu` 的依赖下载全部 wheel（PyTorch 取 CPU 版，约 200 MB，而不是 2 GB 的 CUDA 版）；
第二条下载第 6 章对照用的 Chinese-CLIP 参考实现（它钉死的旧依赖装不上，所以不带依赖）。
教室机器的系统不同时（例如在 Linux 上为 Windows 准备），给两条命令都加上
`--platform win_amd64 --python-version 3.11 --only-binary=:all:`（按教室机器改）。
把整个目录（连同 `wheelhouse/`）拷到 U 盘。

## 在教室机器上安装（不需要网络）

```bash
python3 -m venv .venv
source .venv/bin/activate            # Windows：.venv\\Scripts\\activate
python -m pip install --no-index --find-links wheelhouse --find-links wheels clipedu mplfonts jupyterlab ipywidgets six
python -m pip install --no-index --find-links wheelhouse --no-deps cn_clip
jupyter lab notebooks/
```

`--no-index` 让 pip 不访问任何服务器，只从 `wheelhouse/` 与 `wheels/` 里找包；少了哪个包，它会直接报出名字。
笔记本用到的数据（几何图形、手写数字）都由 `clipedu` 在本机生成或随依赖附带，运行时不联网。
每个笔记本都以 `import clipedu; clipedu.setup_notebook()` 开头，在 2 核 CPU 上几分钟跑完。
"""


def make_zip(out: Path) -> dict:
    html = ROOT / "_build" / "html"
    if not (html / "index.html").is_file():
        raise SystemExit(f"[make_offline] 没有 {html}/index.html（HTML not built）：先运行 bash scripts/build_book.sh")
    pdfs = {name: path for name, path in (("book.pdf", ROOT / "_build" / "pdf" / "book.pdf"),
                                            ("book-student.pdf", ROOT / "_build" / "student" / "pdf" / "book.pdf"))
            if path.is_file()}
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp) / TOP
        shutil.copytree(html, top / "html", ignore=shutil.ignore_patterns(".buildinfo", ".doctrees"))
        stats = make_file_url_safe(top / "html")
        (top / "notebooks").mkdir()
        for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
            shutil.copy2(nb, top / "notebooks" / nb.name)
        if pdfs:
            (top / "pdf").mkdir()
            for name, path in pdfs.items():
                shutil.copy2(path, top / "pdf" / name)
        wheel = build_wheel(top / "wheels")
        (top / "离线使用说明.md").write_text(instructions(wheel.name, list(pdfs)), encoding="utf-8")
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_suffix(".zip.partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for path in sorted(top.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(tmp).as_posix())
        partial.replace(out)
    return {**stats, "pdfs": list(pdfs), "wheel": wheel.name, "bytes": out.stat().st_size}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="打包离线包 _build/clipedu-book-offline.zip")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "clipedu-book-offline.zip")
    args = parser.parse_args(argv)
    info = make_zip(args.out)
    print(f"[make_offline] {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}："
          f"{info['bytes'] / 2**20:.1f} MB，" + json.dumps(info, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
