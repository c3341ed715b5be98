"""CLIP 模型：两座塔加一个温度，自上而下读完（第 3 章 sec-step-model、sec-code-model）。

读法与 nanoGPT 相同：先是积木（LayerNorm、QuickGELU、MLP、注意力残差块、Transformer），
再是两座塔（VisionTransformer、TextTransformer），最后是把它们组合起来的 CLIP。
参数名与 OpenAI CLIP 的 state_dict 完全一致（``visual.conv1``、
``transformer.resblocks.0.attn.in_proj_weight``、``ln_final``、``text_projection``、
``logit_scale`` …），所以加载真实权重只是按键名复制
（见 ``clipedu.pretrained``）。张量一律 batch 在前：(B, N, D)。
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import CLIPConfig, TextConfig, VisionConfig, get_preset


class LayerNorm(nn.LayerNorm):
    """在 fp32 里归一化、再转回输入精度的 LayerNorm（同 OpenAI，半精度下也稳定）。"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias,
                                self.eps)
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        y = F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)
        return y.to(x.dtype)


class QuickGELU(nn.Module):
    """x·σ(1.702x)：OpenAI 原版权重用的 GELU 近似，加载它们时必须用它。"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class MLP(nn.Module):
    """逐词元的两层前馈网络：width → mlp_ratio·width → width。"""

    def __init__(self, width: int, mlp_ratio: float, act: type[nn.Module]):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = act()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Attention(nn.Module):
    """多头自注意力，参数布局同 ``nn.MultiheadAttention``（in_proj_weight 叠放 QKV），
    计算交给 ``F.scaled_dot_product_attention``：CPU 与 GPU 上都会选用融合内核
    （见第 3 章 sec-step-model）。"""

    def __init__(self, width: int, heads: int, causal: bool):
        super().__init__()
        if width % heads != 0:
            raise ValueError(f"width 应能被 heads 整除，实际 width={width}、"
                             f"heads={heads} / width must be divisible by heads")
        self.heads = heads
        self.causal = causal  # 文本塔：每个词元只看它左边的词元
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, N, 3D)
        qkv = qkv.view(B, N, 3, self.heads, D // self.heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, heads, N, d_head)
        q, k, v = qkv.unbind(0)  # 各 (B, heads, N, d_head)
        # is_causal=True 不需要显式的掩码张量，内核自己跳过上三角
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        # y: (B, heads, N, d_head)
        y = y.transpose(1, 2).reshape(B, N, D)  # (B, N, D)
        return self.out_proj(y)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN Transformer 块：x + attn(ln_1(x))，再 x + mlp(ln_2(x))。"""

    def __init__(self, width: int, heads: int, mlp_ratio: float, act: type[nn.Module],
                 causal: bool):
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = Attention(width, heads, causal)
        self.ln_2 = LayerNorm(width)
        self.mlp = MLP(width, mlp_ratio, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """layers 个残差块的堆叠；grad_checkpointing 时用重算换显存（sec-code-precision）"""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0,
                 act: type[nn.Module] = nn.GELU, causal: bool = False):
        super().__init__()
        self.width, self.layers = width, layers
        self.grad_checkpointing = False
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, mlp_ratio, act, causal)
             for _ in range(layers)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                # use_reentrant=False：官方推荐，支持不需要梯度的输入和 torch.compile
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    def init_weights(self) -> None:
        """OpenAI 的初始化：残差支路的输出投影按 (2·layers)^-0.5 缩小，越深贡献越小。"""
        proj_std = (self.width ** -0.5) * ((2 * self.layers) ** -0.5)
        attn_std = self.width ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)


class VisionTransformer(nn.Module):
    """ViT 图像塔：切图块 → 加 [CLS] 与位置编码 → Transformer → 取 [CLS] 投影到共享空间
    （见第 3 章 sec-step-model）。"""

    def __init__(self, cfg: VisionConfig, embed_dim: int,
                 act: type[nn.Module] = nn.GELU):
        super().__init__()
        if cfg.patch_size < 1 or cfg.image_size % cfg.patch_size != 0:
            raise ValueError(f"ViT 的 image_size 应能被 patch_size 整除，实际 "
                             f"{cfg.image_size} 与 {cfg.patch_size}")
        self.image_size, self.patch_size = cfg.image_size, cfg.patch_size
        grid = cfg.image_size // cfg.patch_size
        scale = cfg.width ** -0.5
        # 步长等于核大小的卷积 = 把每个图块展平后做一次线性投影
        self.conv1 = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size,
                               stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(cfg.width))
        self.positional_embedding = nn.Parameter(
            scale * torch.randn(grid * grid + 1, cfg.width))
        self.ln_pre = LayerNorm(cfg.width)
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio,
                                       act)
        self.ln_post = LayerNorm(cfg.width)
        self.proj = nn.Parameter(scale * torch.randn(cfg.width, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        x = self.conv1(x)  # (B, width, grid, grid)
        x = x.flatten(2).transpose(1, 2)  # (B, N=grid², width)
        cls = self.class_embedding.to(x.dtype).expand(B, 1, -1)  # (B, 1, width)
        x = torch.cat([cls, x], dim=1)  # (B, N+1, width)
        x = x + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        x = self.ln_post(x[:, 0])  # (B, width)：[CLS] 位置汇总了整张图
        return x @ self.proj  # (B, embed_dim)

    def init_weights(self) -> None:
        # OpenAI 只对文本塔做缩放初始化、ViT 块留 PyTorch 默认值；
        # 这里两座塔用同一方案，更简单也更稳
        self.transformer.init_weights()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.transformer.grad_checkpointing = enable


class TextTransformer(nn.Module):
    """因果 Transformer 文本塔，在第一个 [EOS] 处取句向量（第 3 章 sec-step-model）。"""

    def __init__(self, cfg: TextConfig, embed_dim: int, act: type[nn.Module] = nn.GELU):
        super().__init__()
        self.context_length, self.vocab_size = cfg.context_length, cfg.vocab_size
        self.eos_token_id = cfg.eos_token_id
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(
            torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio,
                                       act, causal=True)
        self.ln_final = LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, embed_dim))
        self.init_weights()

    def init_weights(self) -> None:
        """OpenAI initialize_parameters 的文本部分：嵌入 N(0, 0.02)，位置 N(0, 0.01)，
        投影 N(0, width^-0.5)。"""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        self.transformer.init_weights()
        nn.init.normal_(self.text_projection, std=self.transformer.width ** -0.5)

    def check_tokens(self, tokens: torch.Tensor) -> None:
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"tokens 应为 LongTensor[B, L]，实际为 "
                            f"{type(tokens).__name__}；请先用分词器 tok(texts)")
        if tokens.dtype not in (torch.long, torch.int32):
            raise ValueError(f"tokens 的 dtype 应为 torch.long，实际为 {tokens.dtype} "
                             f"/ token ids must be integers")
        if tokens.dim() != 2:
            raise ValueError(f"tokens 应为二维 [B, L]，实际形状为 "
                             f"{tuple(tokens.shape)}")
        if tokens.shape[1] > self.context_length:
            raise ValueError(
                f"文本长度 {tokens.shape[1]} 超过模型上下文长度 {self.context_length}；"
                f"请用 tok(texts, context_length={self.context_length}) 截断 "
                f"/ tokens longer than context"
            )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.check_tokens(tokens)
        B, L = tokens.shape
        x = self.token_embedding(tokens) + self.positional_embedding[:L]
        # x: (B, L, width)
        x = self.ln_final(self.transformer(x))  # (B, L, width)
        # 第一个 [EOS] 的位置；没有 [EOS] 的行退回最后一个位置（不做数据相关的分支，
        # GPU 上无需同步）
        is_eos = tokens == self.eos_token_id
        first_eos = is_eos.int().argmax(dim=1)
        eos_pos = torch.where(is_eos.any(dim=1), first_eos, L - 1)  # (B,)
        x = x[torch.arange(B, device=x.device), eos_pos]  # (B, width)
        return x @ self.text_projection  # (B, embed_dim)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.transformer.grad_checkpointing = enable


def build_visual(config: CLIPConfig, act: type[nn.Module]) -> nn.Module:
    """按 config.vision.arch 建图像塔：ViT 或 ModifiedResNet。"""
    v = config.vision
    if v.arch == "vit":
        return VisionTransformer(v, config.embed_dim, act)
    if v.arch == "resnet":
        from .resnet import ModifiedResNet
        return ModifiedResNet(v.layers, config.embed_dim, v.heads, v.image_size,
                              v.width)
    raise ValueError(f"未知图像塔结构 vision.arch={v.arch!r}；应为 'vit' 或 'resnet'")


def build_text(config: CLIPConfig, act: type[nn.Module]) -> nn.Module:
    """建文本塔。塔的子模块名与参数名就是它们在 CLIP state_dict 里的顶层键名。

    另一种文本塔（例如 Chinese-CLIP 的 BERT：子模块 ``bert``、参数 ``text_projection``）
    只需一个类（``forward(tokens) -> (B, embed_dim)``、``check_tokens``、
    ``set_grad_checkpointing``）和这里的一个分支。
    """
    arch = config.text.arch
    if arch == "transformer":
        return TextTransformer(config.text, config.embed_dim, act)
    # Chinese-CLIP（见第 6 章 sec-cnclip）：GELU 用 erf 精确式，不看 act
    if arch == "bert":
        from .bert import BertTextTower
        return BertTextTower(config.text, config.embed_dim)
    raise ValueError(f"未知文本塔结构 text.arch={arch!r}；应为 'transformer' 或 'bert'")


class CLIP(nn.Module):
    """CLIP：图像塔 ``visual`` + 文本塔 + 可学习的对数逆温度 ``logit_scale``。

    见第 3 章 sec-step-model。

    ``forward`` 只返回归一化特征和逆温度 1/τ = exp(logit_scale)，损失在模型外
    （``clipedu.clip_loss``），这样分布式训练时损失可以先跨进程收集特征。
    """

    def __init__(self, config: CLIPConfig):
        if not isinstance(config, CLIPConfig):
            raise TypeError(f"CLIP 需要 CLIPConfig，实际为 {type(config).__name__}；"
                            f"可用 create_model('tiny-cpu')")
        super().__init__()
        act = QuickGELU if config.quick_gelu else nn.GELU
        self.config = config
        # 先建文本塔再建图像塔：同一个种子总是得到同样的初始权重（书中的数字依赖它）
        text = build_text(config, act)
        # OpenAI 把文本塔的部件放在 CLIP 顶层（token_embedding、transformer.*、
        # ln_final、text_projection …），open_clip 也这样做：把塔的子模块与参数
        # 按原名挂到顶层，键名就与真实权重一致。塔对象本身不注册为子模块（否则
        # 每个参数出现两次），只留一个引用给 encode_text；它的部件与顶层的是同一批对象。
        for name, module in text.named_children():
            self.add_module(name, module)
        for name, param in text.named_parameters(recurse=False):
            self.register_parameter(name, param)
        object.__setattr__(self, "text_tower", text)
        self.visual = build_visual(config, act)
        self.visual.init_weights()
        # ln(1/τ)：学对数，1/τ = exp(logit_scale) 永远为正
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))
        self.image_size = config.vision.image_size
        self.context_length = config.text.context_length
        self.eos_token_id = config.text.eos_token_id
        self.channels_last = False

    def check_images(self, images: torch.Tensor) -> None:
        want = (3, self.image_size, self.image_size)
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images 应为 FloatTensor[B, 3, H, W]，实际为 "
                            f"{type(images).__name__}；请先做 transform")
        if images.dim() != 4 or tuple(images.shape[1:]) != want:
            got = tuple(images.shape[1:]) if images.dim() == 4 else tuple(images.shape)
            raise ValueError(
                f"图像尺寸应为 {want}（形状 [B, 3, H, W]），实际为 {got}；"
                "请检查 transform 或 preset 的 image_size / wrong image shape"
            )
        if not images.is_floating_point():
            raise ValueError(
                f"图像 dtype 应为浮点（已按 CLIP 均值方差归一化），"
                f"实际为 {images.dtype}；"
                "请用 clipedu.data.eval_transform 预处理 / images must be float"
            )

    def encode_image(self, images: torch.Tensor,
                     normalize: bool = True) -> torch.Tensor:
        """图像 [B, 3, H, W] → 特征 [B, embed_dim]；normalize=True 时做 L2 归一化。"""
        self.check_images(images)
        images = images.to(self.visual.conv1.weight.dtype)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        x = self.visual(images)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """词元 [B, L] → 特征 [B, embed_dim]；normalize=True 时做 L2 归一化。"""
        x = self.text_tower(tokens)
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, images: torch.Tensor, tokens: torch.Tensor):
        """返回 ``(image_features, text_features, inv_temperature)``：特征已 L2 归一化，
        ``inv_temperature`` 是逆温度 1/τ = exp(logit_scale)。"""
        image_features = self.encode_image(images, normalize=True)
        text_features = self.encode_text(tokens, normalize=True)
        return image_features, text_features, self.logit_scale.exp()

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """把 ln(1/τ) 截断到 [0, max_logit_scale]，即 1 ≤ 1/τ ≤ 100。

        每个优化器步之后调用（见第 4 章 sec-temperature）。"""
        self.logit_scale.clamp_(0, self.config.max_logit_scale)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """两座塔都用激活重算：显存约降到 O(layers) 个块输入，代价是多一次前向。"""
        self.text_tower.set_grad_checkpointing(enable)
        self.visual.set_grad_checkpointing(enable)

    def to_channels_last(self) -> "CLIP":
        """卷积塔改用 NHWC 内存布局（GPU 上 Tensor Core 卷积更快），输入随之转换。"""
        self.visual.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self


def create_model(name_or_config: str | CLIPConfig) -> CLIP:
    """按预设名（如 'tiny-cpu'）或 CLIPConfig 建一个随机初始化的 CLIP。"""
    if isinstance(name_or_config, str):
        return CLIP(get_preset(name_or_config))
    if isinstance(name_or_config, CLIPConfig):
        return CLIP(name_or_config)
    raise TypeError(f"create_model 需要预设名或 CLIPConfig，实际为 "
                    f"{type(name_or_config).__name__}")


__all__ = [
    "LayerNorm", "QuickGELU", "MLP", "Attention", "ResidualAttentionBlock",
    "Transformer", "VisionTransformer", "TextTransformer", "CLIP", "create_model",
    "build_visual", "build_text",
]
