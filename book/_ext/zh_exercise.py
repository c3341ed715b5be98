"""本地 Sphinx 扩展：补上 sphinx-exercise 中文消息目录缺的一条。

sphinx-exercise 1.2.1 的 zh_CN 目录只翻译了 "Solution to"，而 ``exercise_style:
solution_follow_exercise`` 用的标题是 "Solution"，于是中文书里的答案标题显示为英文。
这里在中文构建时把它译成“解答”；上游补上翻译后，此扩展不会改变任何结果。
"""
import sphinx_exercise.directive as _directive

_ZH_CN = {"Solution": "解答"}


def setup(app):
    original = _directive.translate

    def translate(message):
        if str(app.config.language or "").startswith("zh") and message in _ZH_CN:
            return _ZH_CN[message]
        return original(message)

    _directive.translate = translate
    return {"parallel_read_safe": True, "parallel_write_safe": True}
