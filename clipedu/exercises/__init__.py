"""各章练习的自动检查器：``check_xxx(fn)`` 在隐藏用例上运行你的函数，用中文报告结果。

用法（第 4 章）::

    from clipedu.exercises import check_infonce
    result = check_infonce(my_infonce)   # 打印报告
    assert result                        # 全部通过时为真

每章的检查器放在 ``chNN.py``；新增一章时在这里加一行导入即可。
"""
from ._checker import CaseResult, CheckResult, Mistake, run_checks
from .ch03 import check_patchify, check_prompt_ensemble, check_zero_shot_predict
from .ch04 import check_infonce, check_infonce_grad, check_similarity_matrix
from .ch05 import check_log_reader, check_lr_schedule
from .ch06 import check_near_duplicates, check_recall_at_k, check_topk_search

__all__ = [
    "CheckResult", "CaseResult", "Mistake", "run_checks",
    # 第 3 章
    "check_patchify", "check_zero_shot_predict", "check_prompt_ensemble",
    # 第 4 章
    "check_similarity_matrix", "check_infonce", "check_infonce_grad",
    # 第 5 章
    "check_log_reader", "check_lr_schedule",
    # 第 6 章
    "check_topk_search", "check_recall_at_k", "check_near_duplicates",
]
