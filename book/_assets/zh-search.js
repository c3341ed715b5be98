/* 中文搜索：用搜索索引自己的词表切开查询。
   Sphinx 的中文索引用 jieba 分词（cut_for_search），“对比学习”被记成“对比”“学习”两个词；而浏览器里的
   splitQuery 只按空格和标点切，整个“对比学习”拿去查索引，当然查不到，于是多字的查询只剩标题匹配。
   这里把查询里的每一段汉字按索引里有的词做最长匹配（“对比学习”→“对比”+“学习”），其余照旧按空格与标点切；
   Sphinx 再对这些词取交集。searchtools.js 在查询时才调用全局的 splitQuery，所以覆盖它即可。 */
(() => {
  const HAN = /[\u3400-\u9fff\uf900-\ufaff]+/gu;
  const known = (w, terms, titles) => Object.prototype.hasOwnProperty.call(terms, w)
    || Object.prototype.hasOwnProperty.call(titles, w);

  // 最长匹配：从左到右，每次取索引里有的最长的词；单字只在索引里有时才保留（索引不收单字）
  const segment = (run, terms, titles) => {
    const out = [];
    let i = 0;
    while (i < run.length) {
      let j = run.length;
      while (j > i + 1 && !known(run.slice(i, j), terms, titles)) j--;
      const word = run.slice(i, j);
      if (j > i + 1 || known(word, terms, titles)) out.push(word);
      i = j;
    }
    return out;
  };

  window.splitQuery = (query) => {
    // searchtools.js 用 const 声明 Search：它不是 window 的属性，但同一页的脚本可以直接按名字访问
    const index = (typeof Search !== "undefined" && Search._index) || null;
    if (!index) return query.split(/[\s\p{P}\p{S}]+/u).filter(Boolean);   // 索引还没载入：与默认行为相同
    const terms = index.terms || {}, titles = index.titleterms || {};
    const parts = [];
    for (const token of query.split(/[\s\p{P}\p{S}]+/u)) {
      if (!token) continue;
      let last = 0;
      for (const m of token.matchAll(HAN)) {
        if (m.index > last) parts.push(token.slice(last, m.index));
        parts.push(...(known(m[0], terms, titles) ? [m[0]] : segment(m[0], terms, titles)));
        last = m.index + m[0].length;
      }
      if (last < token.length) parts.push(token.slice(last));
    }
    return parts.filter(Boolean);
  };
})();
