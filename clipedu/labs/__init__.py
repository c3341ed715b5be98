"""clipedu.labs：第 2 章的动手实验，与 CLIP 本体分开放（见第 2 章）。

- ``fusion``：早期融合、晚期融合与双塔模型的对照实验（sec-fusion-lab）；
- ``vqa``：几何图形世界上的图形问答数据集 ``ShapesVQADataset``；
- ``diffusion`` 与 ``unet``：DDPM 的数学部分与去噪网络。

这里不预先导入任何子模块：用到哪个就 ``from clipedu.labs.fusion import ...``。
"""
