"""练习检查器的公共机制（见各章末尾的“练习”）。

一个检查器 = 若干个隐藏用例。每个用例把学习者的函数跑在固定种子生成的输入上，与
float64 的参考答案比较；不一致时，再拿输出去比对几种“典型错误”的答案（例如只算了一个
方向的损失、忘了 L2 归一化、温度乘反了），命中哪个就给出哪个提示。最后打印一份中文
报告并返回 :class:`CheckResult`（可直接当 bool 用）。
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch


@dataclass
class Mistake:
    """一种典型错误：名字（ASCII，供测试识别）、它会算出的答案、对应的中文提示。"""

    key: str
    value: torch.Tensor
    hint: str


@dataclass
class CaseResult:
    """一个用例的结果。``diagnosis`` 是命中的典型错误的 key（没有命中则为 None）。"""

    name: str
    passed: bool
    message: str = ""
    diagnosis: str | None = None


@dataclass
class CheckResult:
    """整个检查的结果；``bool(result)`` 表示是否全部通过。"""

    title: str
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    @property
    def diagnoses(self) -> set[str]:
        """所有未通过用例命中的典型错误 key。"""
        return {c.diagnosis for c in self.cases if c.diagnosis}

    def __bool__(self) -> bool:
        return self.passed

    def report(self) -> str:
        n_ok = sum(c.passed for c in self.cases)
        lines = [f"【{self.title}】通过 {n_ok}/{len(self.cases)} 个用例"]
        for c in self.cases:
            mark = "✔" if c.passed else "✘"
            lines.append(f"  {mark} {c.name}" + ("" if c.passed else f"\n      提示：{c.message}"))
        lines.append("全部通过，做得好！" if self.passed else "还有用例没通过，按提示修改后再运行一次。")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.report()


class CheckFailure(Exception):
    """用例内部用来报告“答案不对”，附带提示与（可选的）典型错误 key。"""

    def __init__(self, hint: str, diagnosis: str | None = None):
        super().__init__(hint)
        self.hint = hint
        self.diagnosis = diagnosis


def as_tensor(x, what: str) -> torch.Tensor:
    """把学习者的返回值转成 float64 张量；类型不对时给出清楚的提示。"""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    try:
        return torch.as_tensor(x, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise CheckFailure(f"{what}应返回 torch.Tensor（或能转成张量的数），实际返回了 {type(x).__name__}") from None


def expect_close(got, expected: torch.Tensor, what: str, mistakes: Sequence[Mistake] = (),
                 atol: float = 1e-4, rtol: float = 1e-4) -> None:
    """比较答案；不一致时先查形状，再逐个比对典型错误，最后给出通用提示。"""
    got = as_tensor(got, what)
    expected = expected.to(torch.float64)
    if got.shape != expected.shape:
        for m in mistakes:
            if m.value.shape == got.shape and torch.allclose(got, m.value.double(), atol=atol, rtol=rtol):
                raise CheckFailure(m.hint, m.key)
        raise CheckFailure(f"{what}的形状应为 {tuple(expected.shape)}，实际为 {tuple(got.shape)}", "shape")
    if torch.allclose(got, expected, atol=atol, rtol=rtol):
        return
    for m in mistakes:
        if m.value.shape == got.shape and torch.allclose(got, m.value.double(), atol=atol, rtol=rtol):
            raise CheckFailure(m.hint, m.key)
    err = (got - expected).abs().max().item()
    raise CheckFailure(f"{what}的数值不对：与参考答案的最大偏差为 {err:.3g}（允许 {atol:g}）。"
                       "请对照正文里的公式逐项检查。", "value")


def run_checks(title: str, cases: Sequence[tuple[str, Callable[[], None]]], verbose: bool = True) -> CheckResult:
    """依次运行用例（每个是 ``(中文名称, 无参函数)``），汇总并打印报告。

    学习者代码里抛出的任何异常都记为未通过，并把异常信息写进提示，而不是让检查器崩溃。
    """
    result = CheckResult(title)
    for name, case in cases:
        try:
            case()
        except CheckFailure as e:
            result.cases.append(CaseResult(name, False, e.hint, e.diagnosis))
        except Exception as e:  # noqa: BLE001 - 学习者代码的任何错误都应变成提示
            msg = f"运行你的函数时出错：{type(e).__name__}: {e}"
            result.cases.append(CaseResult(name, False, msg, "exception"))
        else:
            result.cases.append(CaseResult(name, True))
    if verbose:
        print(result.report())
    return result


def check_callable(fn, name: str) -> None:
    """检查器的参数必须是函数。"""
    if not callable(fn):
        raise TypeError(f"{name} 需要传入一个函数（callable），实际为 {type(fn).__name__}")


def random_features(n: int, d: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    """固定种子的、**未归一化**的随机特征（float64），长度各不相同，以便发现漏掉的归一化。"""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    lengths = 0.5 + scale * torch.rand(n, 1, generator=g, dtype=torch.float64)
    return x * lengths


def l2_normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return x / x.norm(dim=dim, keepdim=True)
