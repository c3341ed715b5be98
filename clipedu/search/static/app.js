// clipedu 以文搜图页面：只和本服务的 JSON 接口通信，不从其他主机加载任何东西。
"use strict";
const $ = (id) => document.getElementById(id);
let uploaded = null;  // 最近一次选择的图片文件

function showError(message) {
  const el = $("error");
  el.textContent = message || "";
  el.hidden = !message;
}

async function callJSON(url, options) {
  const response = await fetch(url, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || ("HTTP " + response.status));
  return data;
}

function renderResults(container, results) {
  container.replaceChildren();
  for (const r of results) {
    const fig = document.createElement("figure");
    fig.dataset.path = r.path;
    fig.dataset.score = r.score;
    const img = document.createElement("img");
    img.src = r.url;
    img.alt = r.path;
    img.loading = "lazy";
    const cap = document.createElement("figcaption");
    cap.textContent = r.rank + ". " + r.score.toFixed(3) + " " + r.path;
    fig.append(img, cap);
    container.append(fig);
  }
}

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("");
  const params = new URLSearchParams({ q: $("query").value, k: $("k").value });
  try {
    const data = await callJSON("/search?" + params);
    renderResults($("search-results"), data.results);
    $("search-results").dataset.query = data.query;
  } catch (e) { showError(e.message); }
});

$("upload").addEventListener("change", async () => {
  showError("");
  uploaded = $("upload").files[0] || null;
  if (!uploaded) return;
  $("preview").src = URL.createObjectURL(uploaded);
  $("preview").hidden = false;
  try {
    const data = await callJSON("/similar?k=" + encodeURIComponent($("k").value), { method: "POST", body: uploaded });
    renderResults($("similar-results"), data.results);
  } catch (e) { showError(e.message); }
});

$("classify-button").addEventListener("click", async () => {
  showError("");
  if (!uploaded) { showError("请先选择一张图片"); return; }
  const labels = $("labels").value.split(/[\n,，]/).map((s) => s.trim()).filter(Boolean).join(",");
  try {
    const data = await callJSON("/classify?labels=" + encodeURIComponent(labels), { method: "POST", body: uploaded });
    const box = $("classify-results");
    box.replaceChildren();
    for (const row of data.labels) {
      const line = document.createElement("div");
      line.className = "bar-row";
      line.dataset.label = row.label;
      line.dataset.prob = row.prob;
      const name = document.createElement("span");
      name.textContent = row.label;
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.width = (100 * row.prob).toFixed(1) + "%";
      const value = document.createElement("span");
      value.textContent = (100 * row.prob).toFixed(1) + "%";
      line.append(name, bar, value);
      box.append(line);
    }
  } catch (e) { showError(e.message); }
});

callJSON("/health").then((h) => {
  $("health").textContent = "索引 " + h.count + " 张图片 · " + h.dim + " 维 · 后端 " + h.backend;
}).catch((e) => showError("服务不可用：" + e.message));
