"""从笔记本到服务：给任意图片文件夹建索引、以文搜图网页与 ONNX 导出（见第 6 章 sec-service）。

模块按数据流的顺序排列，每个只管一件事：

- ``images``：安全解码与预处理（不依赖 torch，服务端与建索引共用同一份代码）；
- ``encoders``：把检查点变成两个函数 ``encode_images`` / ``encode_texts``，后端是 PyTorch 或 ONNX Runtime；
- ``index``：建索引（分块、断点续跑、增量更新、原子替换）与精确检索；
- ``approx``：可选的 FAISS 近似索引（flat / IVF / HNSW），接口与精确检索相同；
- ``export``：把两个编码器导出为 ONNX；
- ``app``：Starlette 网页应用与 JSON 接口；``loadtest``：有界的回环压测；
- ``cli``：``python -m clipedu index|serve|export``。

这个包在导入时不导入 torch：``serve --backend onnx`` 查询时完全不需要它。
"""
