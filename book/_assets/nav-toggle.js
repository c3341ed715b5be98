/* 手机上的目录按钮（issue 17）。
   pydata-sphinx-theme 与 sphinx-book-theme 都只给页面里“第一个” .primary-toggle / .secondary-toggle
   绑定点击事件，那是顶栏里的按钮；窄屏上它被隐藏，读者看到的是正文页眉里的另一个按钮，点了没有反应。
   这里把其余按钮的点击转给第一个，于是弹出侧栏（手机）或收起侧栏（宽屏）的行为与主题一致。 */
document.addEventListener("DOMContentLoaded", () => {
  for (const selector of [".primary-toggle", ".secondary-toggle"]) {
    const buttons = Array.from(document.querySelectorAll(selector));
    for (const button of buttons.slice(1)) {
      button.addEventListener("click", (event) => {
        event.preventDefault();
        event.stopPropagation();
        buttons[0].click();
      });
    }
  }
});
