"""错误到一行中文说明的唯一映射：命令行从不给用户看调用栈（见第 5 章 sec-code-cli）。

用户能改正的输入（旗标、配置、路径）是用法错误，退出码 2；运行中的失败（坏数据、磁盘满、
损坏的权重文件、数值发散）退出码 1；Ctrl-C 退出码 130；训练收到 SIGTERM、保存后停下，退出码 143（训练中按 Ctrl-C 也先保存再停，退出码 130）。每条说明是中文，末尾带英文关键词，
并尽量点出相关的文件或旗标。想看完整调用栈时设置环境变量 ``CLIPEDU_DEBUG=1``。
"""
from __future__ import annotations

import errno
import os
import re
import sys

EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class UsageError(ValueError):
    """旗标或配置不合法：用户改一下命令就能解决（退出码 2）。"""


class RunError(RuntimeError):
    """运行中的失败，例如输出目录被另一个进程占用（退出码 1）。"""


class CorruptFileError(ValueError):
    """文件的内容坏了：截断、校验和不符、格式损坏（退出码 1）。换一个好文件才能解决，不是旗标写错了。"""


_OS_HINTS = {
    errno.ENOSPC: ("磁盘已满；已写好的文件（如 last.pt）保持原样，请腾出空间后重新运行（训练用 --resume latest 接着）"
                   " / no space left on device"),
    errno.EDQUOT: "磁盘配额已用完；请腾出空间后重新运行（训练用 --resume latest 接着） / disk quota exceeded",
    errno.EACCES: "没有权限；请换一个可写的目录或检查文件权限 / permission denied",
    errno.EPERM: "操作不被允许；请检查文件权限 / operation not permitted",
    errno.EROFS: "文件系统是只读的；请换一个可写的目录（如 --out runs/xxx） / read-only file system",
    errno.ENOTDIR: "路径中有一段是文件而不是目录；请换一个路径 / not a directory",
    errno.EISDIR: "这是一个目录，这里需要文件 / is a directory",
    errno.EEXIST: "路径已存在且不是目录；请换一个路径 / file exists",
    errno.ENOENT: "文件或目录不存在；请检查路径 / no such file or directory",
    errno.ENAMETOOLONG: "路径太长 / file name too long",
    errno.EMFILE: "打开的文件太多；请减少 --num-workers / too many open files",
    errno.ELOOP: "路径是符号链接环（链接最终指向自己）；请换一个路径 / symlink loop",
    errno.ENOMEM: "内存不足；请减小 --batch-size 或 --num-workers / out of memory",
}
_OUT_OF_MEMORY = re.compile(r"can't allocate memory|out of memory|CUDA error: out of memory", re.IGNORECASE)
_SYMLINK_LOOP = re.compile(r"Symlink loop from '?([^']*)'?")

_WEIGHTS_ONLY_ADVICE = re.compile(r"weights_only\W{0,12}(?:=|set to)\W{0,4}False", re.IGNORECASE)
_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)|unpickle global ([\w.]+)|^global ([\w.]+)$|(unrecognized function|Unsupported class)",
                            re.MULTILINE)
_KEY_PHRASE = re.compile(r"/\s*[A-Za-z][\w ,.:'()-]*$", re.ASCII)


def _first_line(text: str) -> str:
    """多行说明（如键与形状的清单）压成一行。"""
    return "；".join(ln.strip() for ln in str(text).splitlines() if ln.strip())


def _worker_original(message: str) -> str:
    """DataLoader worker 里的异常被包成 “Caught X in DataLoader worker … Original Traceback …”：
    取出最后一行（原始异常的类型与说明）。"""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    return lines[-1] if lines else message


def unsafe_global(error: BaseException):
    """反序列化被拒绝是因为文件要求一个不许可的全局名字（恶意载荷的样子）时返回这个名字，否则（乱码、截断）返回 None。"""
    m = _UNSAFE_GLOBAL.search(str(error))
    if m is None:
        return None
    return next((g for g in m.groups()[:3] if g), None) or "非张量对象"


def describe_unsafe_pickle(error: BaseException) -> str:
    """PyTorch 拒绝 weights_only 读取时，只说出被拒绝的全局名字，不转述“改用 weights_only=False”的建议。"""
    name = unsafe_global(error) or "非张量对象"
    return (f"文件要求执行 Python 对象 {name}，这不是张量数据，已拒绝且没有执行任何代码。"
            "安全的文件只含张量与基本类型（clipedu 的检查点、.safetensors 都是）；"
            "请从可信来源重新获取或导出该文件")


def message_for(error: BaseException) -> tuple[str, int]:
    """异常 → (一行说明, 退出码)。"""
    from .data.robust import BadSampleError

    if isinstance(error, KeyboardInterrupt):
        return "已被用户中断（Ctrl-C）；已保存的检查点可用 --resume latest 继续 / interrupted", EXIT_INTERRUPTED
    from .stop_signal import TrainingStopped
    if isinstance(error, TrainingStopped):  # 退出码 128 + 信号编号，与被信号杀死时 shell 报告的相同
        return str(error), error.exit_code
    text = str(error)
    if "DataLoader worker" in text and "Original Traceback" in text:
        original = _worker_original(text)
        return f"数据读取进程（--num-workers）出错：{original} / error in DataLoader worker", EXIT_FAILURE
    if _WEIGHTS_ONLY_ADVICE.search(text):  # 安全网：绝不转述 “改用 weights_only=False” 的建议
        if unsafe_global(error):
            return describe_unsafe_pickle(error) + " / refused unsafe pickle", EXIT_FAILURE
        return "文件已损坏或不是 PyTorch 权重文件 / corrupt file", EXIT_FAILURE
    if isinstance(error, (BadSampleError, CorruptFileError)):
        return _first_line(text), EXIT_FAILURE
    if isinstance(error, FileNotFoundError) and error.errno is not None:  # 操作系统抛的：补上中文与路径
        where = f"{error.filename}：" if error.filename else ""
        return f"{where}{_OS_HINTS[errno.ENOENT]}", EXIT_USAGE
    if isinstance(error, (UsageError, FileNotFoundError)):
        return _first_line(text), EXIT_USAGE
    if isinstance(error, RuntimeError) and (m := _SYMLINK_LOOP.search(text)):  # pathlib.resolve 遇到环
        return f"{m.group(1)}：{_OS_HINTS[errno.ELOOP]}", EXIT_USAGE
    if isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and _OUT_OF_MEMORY.search(text)):
        return ("内存不足（模型、批或评估集太大）；请减小 --batch-size、--eval-size 或换小一点的模型"
                " / out of memory"), EXIT_FAILURE
    if isinstance(error, OSError):
        where = f"{error.filename}：" if getattr(error, "filename", None) else ""
        hint = _OS_HINTS.get(error.errno, f"{error.strerror or text} / OS error")
        return f"{where}{hint}", EXIT_FAILURE
    if isinstance(error, (ValueError, TypeError)):
        # 本库抛的 ValueError/TypeError 都是对输入的说明（配置、旗标、文件内容）
        return _first_line(text), EXIT_USAGE
    if isinstance(error, FloatingPointError):
        return _first_line(text), EXIT_FAILURE
    if isinstance(error, RecursionError):  # 安全网：嵌套几万层的 JSON/pickle 之类
        return "输入文件嵌套太深（例如一行 JSON 里有成千上万层括号），无法解析 / input nested too deeply", EXIT_FAILURE
    if isinstance(error, KeyError):
        return (f"文件里缺少必需的键 {text}；它不是这里需要的 clipedu 检查点或 CLIP 权重 / missing key",
                EXIT_FAILURE)
    if type(error).__name__ == "SafetensorError":
        return f"safetensors 文件损坏或格式不对（{_first_line(text)}） / invalid safetensors file", EXIT_FAILURE
    name = type(error).__name__
    return (f"{name}: {_first_line(text)}（设置 CLIPEDU_DEBUG=1 可查看完整调用栈） / unexpected error",
            EXIT_FAILURE)


def report(error: BaseException, stream=None) -> int:
    """把异常打印成一行 “错误：……”，返回退出码。``CLIPEDU_DEBUG=1`` 时先打印调用栈。"""
    stream = stream or sys.stderr
    if os.environ.get("CLIPEDU_DEBUG") and not isinstance(error, KeyboardInterrupt):
        import traceback
        traceback.print_exception(type(error), error, error.__traceback__, file=stream)
    message, code = message_for(error)
    if not _KEY_PHRASE.search(message):  # 每条说明都带英文关键词，便于搜索与日志过滤
        message += " / " + ("invalid input" if code == EXIT_USAGE else "failed")
    # 中文之后紧跟的 “/ key phrase” 补上空格：统一成 “… / key phrase”（路径里的 / 不动）
    message = re.sub(r"(?<=[^\x00-\x7f])/\s*(?=[A-Za-z][\w ,.:'()-]*$)", " / ", message)
    print(f"错误：{message}", file=stream, flush=True)
    return code


__all__ = ["UsageError", "RunError", "CorruptFileError", "message_for", "report", "describe_unsafe_pickle", "unsafe_global",
           "EXIT_FAILURE", "EXIT_USAGE", "EXIT_INTERRUPTED"]
