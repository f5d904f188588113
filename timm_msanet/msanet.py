""" MSA-Net: Multi-branch Multi-Scale Attention Network for facial expression recognition

Paper: `Multi-branch Multi-Scale Attention Network for Facial Expression Recognition (FER) in-the-Wild`
    - C. Ghadai, D. Patra (NIT Rourkela), 2022

Architecture as read here (every reading below is a constructor argument of `MSANet` or
`MultiScaleBlock`, and is listed again in docs/design.md):

* Feature pre-extractor: ResNet-18's stem (7x7 conv, BN, ReLU, 3x3 max-pool) and its first two stages
  (`layer1`, `layer2`) built from timm's own `BasicBlock`, with ResNet-18's parameter names, so a
  timm/torchvision ResNet-18 state dict (ImageNet or an MS-Celeb-1M face checkpoint) loads into it by
  name. Output 128 x 28 x 28 at a 224 input, as the paper states.
* Three parallel branches with k x k = 7, 5, 3 kernels (`branch_kernels`). Each branch: two
  `MultiScaleBlock`s in series, then CBAM (timm's `CbamModule`, `attn_layer='cbam'`).
  The paper gives neither the branch widths nor strides. Default reading (`branch_chs=(256, 512)`,
  `branch_strides=(2, 2)`): the two blocks of a branch mirror ResNet-18's layer3 and layer4, so a
  single-branch variant is a drop-in replacement of ResNet-18's last two stages.
* Fusion: channel concatenation of the branch outputs (3 x 512), global average pool, dropout
  (`drop_rate`), linear classifier (timm's `ClassifierHead`).
* Multi-scale block (Res2Net-style, paper Sec. 2.2 / Fig. 2): 1x1 conv reduces the channels to the
  bottleneck width (`bottle_ratio` x out_chs, default 0.5), the map is split into n = `scale`
  (default 4) equal subsets, every subset goes through its own k x k conv (with BN and ReLU; the
  bottleneck convs keep their channel count), the outputs are concatenated, a 1x1 conv restores
  out_chs, and a residual shortcut (identity, or 1x1 conv + BN when shape changes) is added.
  Unlike Res2Net, the first subset is convolved too: the paper's Y_1 = P_1(X_1).
* Hierarchy (`hierarchy`): the paper's text says each k x k conv receives the previous subset's
  output and so sees a growing receptive field, which is Res2Net's Y_i = P_i(X_i + Y_{i-1})
  (`'pre'`, default). Its equation (1) writes Y_i = P_i(X_i) + Y_{i-1} (`'post'`), which does not
  grow the receptive field inside a block. Both are available.
* Striding (not in the paper): in `'pre'` blocks with stride s, the first subset's k x k conv has
  stride s, the other subsets are 3x3 average-pooled with stride s before they join the hierarchy
  (Res2Net pools its pass-through subset the same way), so strided blocks stay hierarchical. In
  `'post'` blocks every subset conv has stride s.
* Stochastic depth (`drop_path_rate`) rises linearly over the network depth: the 4 pre-extractor
  blocks, then the branch blocks (parallel branches share a depth).
* The paper's loss weight beta scales the cross-entropy; it lives in the training recipe, not here.
* Grey input (`grey_input`, not in the paper): models trained on grey faces (FER2013, FERPlus) turn a colour
  image into the grey image PIL's `convert('L')` makes of it (ITU-R 601-2 luma, three equal channels) as the
  first step of their forward, on the normalised tensor (`ColourToGrey`, no parameters, nothing in the
  state_dict), so timm's own transform, train.py / validate.py / inference.py, ONNX runtimes and the package's
  tools all show such a model what it was trained on. A no-op for grey input. With pretrained weights it
  defaults to what their cfg says (the grey-input note of the FER2013 and FERPlus releases; a weights file's
  own notes through `set_grey_input`); a model without pretrained weights takes colour as it is. Pass
  `grey_input=False` (train.py `--model-kwargs grey_input=False`) to fine-tune such a release on colour faces.
* Speed, not semantics: the first block of every branch reads the same pre-extractor map, so their 1x1
  reduce convs and their shortcut convs each run as one conv over the concatenated weights
  (`fuse_branch_entry`, a constructor argument, on wherever the branches allow it). BN layers stay per
  block, parameters and state_dict keys are unchanged; a test checks outputs, gradients and BN statistics
  against the per-branch computation.

Pretrained tags: `msanet_r18.fer2013` (the default) is a complete expression model trained on FER2013 at 64 px
from the ImageNet pre-extractor and installed with the package (see `releases.py`). `tv_in1k` loads timm's ImageNet
ResNet-18 (`timm/resnet18.tv_in1k`) into the pre-extractor and leaves branches and head at their fresh
init: the paper's starting point for training.
"""
import os
from typing import Any, Dict, List, Optional, Tuple, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, DropPath, calculate_drop_path_rates, get_attn, get_device_dtype
from timm.models import build_model_with_cfg, checkpoint, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._builder import resolve_pretrained_cfg  # not re-exported by timm.models
from timm.models._features import FeatureGetterNet, feature_take_indices  # not re-exported by timm.models
from timm.models.resnet import BasicBlock, downsample_conv

from .labels import FER7_LABELS, FER8_LABELS

# In a cfg's `notes`: the weights were trained on grey faces, so the model gets its grey step (`_create_msanet`).
# The same text is `timm_msanet.notes.GREY_INPUT_NOTE`, which the tools read (a test keeps the two equal).
GREY_INPUT_NOTE = 'input: greyscale (trained on grey faces; convert colour images to grey, then to 3 channels)'
_WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'weights')

__all__ = ['ColourToGrey', 'MSANet', 'MSANetFeatures', 'MultiScaleBlock', 'MultiScaleBranch', 'checkpoint_filter_fn']

HIERARCHIES = ('pre', 'post')
PRE_EXTRACTOR_PREFIXES = ('conv1.', 'bn1.', 'layer1.', 'layer2.')


# ITU-R 601-2 luma, the weights of PIL's convert('L')
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


class ColourToGrey(nn.Module):
    """A normalised RGB batch -> the normalised batch of its grey image, replicated to three channels.

    With x_c = (v_c - mean_c) / std_c, the grey value is g = sum_k w_k v_k (PIL's luma weights w) and output
    channel c is (g - mean_c) / std_c. A grey image (v_0 = v_1 = v_2) comes out as it went in, up to float
    rounding. Elementwise ops, not a 1x1 conv, so that bf16 autocast leaves the step in the input's precision.
    Its constants are non-persistent buffers: the state_dict has no trace of it.
    """

    def __init__(
            self,
            mean: Tuple[float, ...] = IMAGENET_DEFAULT_MEAN,
            std: Tuple[float, ...] = IMAGENET_DEFAULT_STD,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype or torch.get_default_dtype()}
        mean_t = torch.tensor(mean, dtype=torch.float64).reshape(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float64).reshape(1, 3, 1, 1)
        luma = torch.tensor(LUMA_WEIGHTS, dtype=torch.float64).reshape(1, 3, 1, 1)
        self.register_buffer('luma_std', (luma * std_t).to(**dd), persistent=False)
        self.register_buffer('luma_mean', (luma * mean_t).sum().reshape(1, 1, 1, 1).to(**dd), persistent=False)
        self.register_buffer('mean', mean_t.to(**dd), persistent=False)
        self.register_buffer('std', std_t.to(**dd), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = (x * self.luma_std).sum(1, keepdim=True) + self.luma_mean  # in [0, 1] pixel units
        return (grey - self.mean) / self.std


class MultiScaleBlock(nn.Module):
    """Res2Net-style multi-scale residual block of MSA-Net (paper Sec. 2.2, Fig. 2).

    1x1 reduce -> split into `scale` subsets -> hierarchical k x k convs -> concat -> 1x1 restore,
    plus a residual shortcut. See the module docstring for `hierarchy` and stride handling.
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            kernel_size: int = 3,
            stride: int = 1,
            scale: int = 4,
            bottle_ratio: float = 0.5,
            hierarchy: str = 'pre',
            act_layer: Type[nn.Module] = nn.ReLU,
            norm_layer: Type[nn.Module] = nn.BatchNorm2d,
            drop_path_rate: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        if hierarchy not in HIERARCHIES:
            raise ValueError(f"hierarchy must be one of {HIERARCHIES}, got {hierarchy!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be a positive odd number, got {kernel_size}')
        if scale < 1:
            raise ValueError(f'scale (number of subsets) must be >= 1, got {scale}')
        width = int(out_chs * bottle_ratio) // scale
        if width < 1:
            raise ValueError(
                f'bottleneck too thin: out_chs={out_chs} x bottle_ratio={bottle_ratio} split into scale={scale} '
                f'subsets leaves no channels per subset')
        self.width = width
        self.scale = scale
        self.kernel_size = kernel_size
        self.hierarchy = hierarchy
        hierarchical_stride = hierarchy == 'pre' and stride > 1

        self.conv1 = nn.Conv2d(in_chs, width * scale, kernel_size=1, bias=False, **dd)
        self.bn1 = norm_layer(width * scale, **dd)
        self.convs = nn.ModuleList([
            nn.Conv2d(
                width, width, kernel_size=kernel_size,
                stride=1 if hierarchical_stride and i > 0 else stride,
                padding=kernel_size // 2, bias=False, **dd)
            for i in range(scale)
        ])
        self.bns = nn.ModuleList([norm_layer(width, **dd) for _ in range(scale)])
        # 'pre' strided blocks: later subsets meet the (already strided) previous output at low resolution
        self.pool = nn.AvgPool2d(
            kernel_size=3, stride=stride, padding=1, count_include_pad=False) if hierarchical_stride else None
        self.conv3 = nn.Conv2d(width * scale, out_chs, kernel_size=1, bias=False, **dd)
        self.bn3 = norm_layer(out_chs, **dd)
        self.act = act_layer(inplace=True)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0. else nn.Identity()
        if stride != 1 or in_chs != out_chs:
            self.downsample = downsample_conv(in_chs, out_chs, 1, stride=stride, norm_layer=norm_layer, **dd)
        else:
            self.downsample = nn.Identity()

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def _subsets_pre(self, xs: List[torch.Tensor]) -> List[torch.Tensor]:
        """Y_1 = P_1(X_1), Y_i = P_i(X_i + Y_{i-1}): each subset's conv sees the previous output (Res2Net)."""
        ys: List[torch.Tensor] = []
        y = xs[0]  # placeholder so TorchScript sees a Tensor, overwritten at i == 0
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            xi = xs[i]
            if i > 0:
                if self.pool is not None:
                    xi = self.pool(xi)
                xi = xi + y
            y = self.act(bn(conv(xi)))
            ys.append(y)
        return ys

    def _subsets_post(self, xs: List[torch.Tensor]) -> List[torch.Tensor]:
        """Y_1 = P_1(X_1), Y_i = P_i(X_i) + Y_{i-1}: the paper's equation (1)."""
        ys: List[torch.Tensor] = []
        y = xs[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            yi = self.act(bn(conv(xs[i])))
            y = yi if i == 0 else yi + y
            ys.append(y)
        return ys

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_reduced(self.conv1(x), self.downsample(x))

    def forward_reduced(self, reduced: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """The block after its input 1x1 conv (`reduced`, before bn1) and its shortcut (`shortcut`)."""
        xs = torch.split(self.act(self.bn1(reduced)), self.width, 1)
        out = torch.cat(self._subsets_pre(xs) if self.hierarchy == 'pre' else self._subsets_post(xs), 1)

        out = self.bn3(self.conv3(out))
        out = self.drop_path(out) + shortcut
        return self.act(out)


class MultiScaleBranch(nn.Module):
    """One parallel path of MSA-Net: multi-scale blocks in series (the multi-scale module), then attention."""

    def __init__(
            self,
            in_chs: int,
            kernel_size: int,
            out_chs: Tuple[int, ...] = (256, 512),
            strides: Tuple[int, ...] = (2, 2),
            attn_layer: Optional[Union[str, Type[nn.Module]]] = 'cbam',
            drop_path_rates: Optional[Tuple[float, ...]] = None,
            device=None,
            dtype=None,
            **block_kwargs: Any,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        if len(out_chs) != len(strides):
            raise ValueError(f'branch out_chs {out_chs} and strides {strides} must have the same length')
        drop_path_rates = drop_path_rates or (0.,) * len(out_chs)
        blocks = []
        prev_chs = in_chs
        for chs, stride, dpr in zip(out_chs, strides, drop_path_rates):
            blocks.append(MultiScaleBlock(
                prev_chs, chs, kernel_size=kernel_size, stride=stride, drop_path_rate=dpr, **block_kwargs, **dd))
            prev_chs = chs
        self.blocks = nn.Sequential(*blocks)
        attn_cls = get_attn(attn_layer) if isinstance(attn_layer, str) else attn_layer
        self.attn = attn_cls(prev_chs, **dd) if attn_cls is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.blocks(x))


class MSANet(nn.Module):
    """MSA-Net: ResNet-18 pre-extractor, parallel multi-scale attention branches, concat fusion, linear head.

    Paper: `Multi-branch Multi-Scale Attention Network for Facial Expression Recognition (FER) in-the-Wild`
    (Ghadai & Patra, 2022). See the module docstring for how each ambiguity of the paper is read.
    """

    def __init__(
            self,
            branch_kernels: Tuple[int, ...] = (7, 5, 3),
            branch_chs: Tuple[int, ...] = (256, 512),
            branch_strides: Tuple[int, ...] = (2, 2),
            scale: int = 4,
            bottle_ratio: float = 0.5,
            hierarchy: str = 'pre',
            attn_layer: Optional[Union[str, Type[nn.Module]]] = 'cbam',
            pre_chs: Tuple[int, int] = (64, 128),
            pre_depths: Tuple[int, int] = (2, 2),
            num_classes: int = 7,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            act_layer: Type[nn.Module] = nn.ReLU,
            norm_layer: Type[nn.Module] = nn.BatchNorm2d,
            zero_init_last: bool = True,
            grey_input: bool = False,
            fuse_branch_entry: Optional[bool] = None,
            device=None,
            dtype=None,
    ):
        """
        Args:
            branch_kernels: Kernel size of each parallel branch (one branch per entry).
            branch_chs: Output channels of the multi-scale blocks of every branch, in order.
            branch_strides: Stride of each of those blocks.
            scale: Number of channel subsets n in each multi-scale block.
            bottle_ratio: Bottleneck width (all subsets together) as a fraction of a block's out channels.
            hierarchy: 'pre' for Y_i = P_i(X_i + Y_{i-1}) (Res2Net, paper text), 'post' for
                Y_i = P_i(X_i) + Y_{i-1} (paper eq. 1).
            attn_layer: Attention at the end of each branch ('cbam', any timm `get_attn` name, a module
                class, or None for the paper's "MS" ablation).
            pre_chs: Channels of the pre-extractor's two ResNet stages (ResNet-18: 64, 128).
            pre_depths: BasicBlocks in each of them (ResNet-18: 2, 2).
            num_classes: Number of expression classes (0 for a feature extractor).
            in_chans: Input channels (1 for grayscale FER2013).
            global_pool: Global pooling type of the head.
            drop_rate: Dropout before the classifier.
            drop_path_rate: Stochastic depth rate, linear over depth.
            act_layer: Activation layer.
            norm_layer: Normalization layer.
            zero_init_last: Zero-init the last BN of every residual branch.
            grey_input: Turn colour input into its grey image first (`ColourToGrey`), for models trained on
                grey faces; needs in_chans=3 and the ImageNet mean/std of every msanet cfg.
            fuse_branch_entry: Run the branches' first 1x1 reduce and shortcut convs as one conv each (speed
                only, same parameters and results); None: wherever the branches allow it.
        """
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        if len(pre_chs) != 2 or len(pre_depths) != 2:
            raise ValueError(f'the pre-extractor has two ResNet stages: got pre_chs={pre_chs}, pre_depths={pre_depths}')
        if len(branch_chs) != len(branch_strides):
            raise ValueError(f'branch_chs {branch_chs} and branch_strides {branch_strides} must have the same length')
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.branch_kernels = tuple(branch_kernels)
        if grey_input and in_chans != 3:
            raise ValueError(f'grey_input converts 3-channel colour input; this model has in_chans={in_chans}')
        self.grey_input = grey_input
        self.input_grey = ColourToGrey(**dd) if grey_input else None

        num_pre_blocks = sum(pre_depths)
        dpr = calculate_drop_path_rates(drop_path_rate, num_pre_blocks + len(branch_chs))

        # Feature pre-extractor: ResNet-18 stem + first stages, ResNet parameter names
        stem_chs = 64
        self.conv1 = nn.Conv2d(in_chans, stem_chs, kernel_size=7, stride=2, padding=3, bias=False, **dd)
        self.bn1 = norm_layer(stem_chs, **dd)
        self.act1 = act_layer(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.feature_info = [dict(num_chs=stem_chs, reduction=2, module='act1')]
        prev_chs, reduction, block_idx = stem_chs, 4, 0
        for stage_idx, (chs, depth) in enumerate(zip(pre_chs, pre_depths)):
            stride = 1 if stage_idx == 0 else 2
            reduction *= stride
            blocks = []
            for i in range(depth):
                s = stride if i == 0 else 1
                downsample = None
                if s != 1 or prev_chs != chs:
                    downsample = downsample_conv(prev_chs, chs, 1, stride=s, norm_layer=norm_layer, **dd)
                blocks.append(BasicBlock(
                    prev_chs, chs, stride=s, downsample=downsample, act_layer=act_layer, norm_layer=norm_layer,
                    drop_path=DropPath(dpr[block_idx]) if dpr[block_idx] > 0. else None, **dd))
                prev_chs = chs
                block_idx += 1
            self.add_module(f'layer{stage_idx + 1}', nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f'layer{stage_idx + 1}'))

        # Parallel multi-scale attention branches
        self.branches = nn.ModuleList([
            MultiScaleBranch(
                prev_chs, k, out_chs=tuple(branch_chs), strides=tuple(branch_strides), attn_layer=attn_layer,
                drop_path_rates=tuple(dpr[num_pre_blocks:]), scale=scale, bottle_ratio=bottle_ratio,
                hierarchy=hierarchy, act_layer=act_layer, norm_layer=norm_layer, **dd)
            for k in self.branch_kernels
        ])
        for i, (chs, stride) in enumerate(zip(branch_chs, branch_strides)):
            reduction *= stride
            # branch outputs of one depth, concatenated; the last one is the attention-refined fusion
            self.feature_info.append(dict(
                num_chs=chs * len(self.branch_kernels), reduction=reduction, module=f'branches.*.blocks.{i}'))
        self.feature_info[-1]['module'] = 'branches'

        # Every branch's first block reads the same map: its 1x1 reduce conv and its shortcut conv run as
        # one conv each over the concatenated weights (fewer, larger kernels; same result, same params).
        first = [b.blocks[0] for b in self.branches]
        fusable = len(first) > 1 and all(
            isinstance(blk.downsample, nn.Sequential) and blk.downsample[0].stride == first[0].downsample[0].stride
            for blk in first)
        if fuse_branch_entry and not fusable:
            raise ValueError('fuse_branch_entry needs two or more branches whose first blocks have a strided or '
                             'projecting shortcut of one stride')
        self.fuse_branch_entry = fusable if fuse_branch_entry is None else fuse_branch_entry

        self.num_features = self.head_hidden_size = branch_chs[-1] * len(self.branch_kernels)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)

        self.init_weights(zero_init_last=zero_init_last)

    @torch.jit.ignore
    def init_weights(self, zero_init_last: bool = True) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, 'zero_init_last'):
                    m.zero_init_last()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        # Branch blocks come after the pre-extractor in depth order, so they get their own group key
        # (later keys order after earlier ones), with the branch attention after the last block.
        return dict(
            stem=r'^conv1|bn1|maxpool',
            blocks=r'^layer(\d+)' if coarse else r'^layer(\d+)\.(\d+)',
            branch_blocks=[
                (r'^branches\.\d+\.blocks\.(\d+)', None),
                (r'^branches\.\d+\.attn', (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def set_grey_input(self, enable: bool = True) -> None:
        """Add or remove the grey step (`ColourToGrey`): for weights whose grey training becomes known after
        construction (a weights file's own notes). No parameters change."""
        if enable and self.in_chans != 3:
            raise ValueError(f'grey_input converts 3-channel colour input; this model has in_chans={self.in_chans}')
        if enable and self.input_grey is None:
            self.input_grey = ColourToGrey(**get_device_dtype(self))
        elif not enable:
            self.input_grey = None
        self.grey_input = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> Union[str, nn.Module]:
        return 'head.fc' if name_only else self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        # the head may hold no parameters after reset_classifier(0): take device and dtype from the model
        self.head.reset(num_classes, pool_type=global_pool, in_features=self.num_features, **get_device_dtype(self))
        self.head_hidden_size = self.head.num_features

    @torch.jit.unused
    def _branch_entry(self, x: torch.Tensor) -> List[torch.Tensor]:
        """First block of every branch, with their 1x1 reduce and shortcut convs fused (see __init__)."""
        first = [b.blocks[0] for b in self.branches]
        reduced = F.conv2d(x, torch.cat([blk.conv1.weight for blk in first]))
        shortcut = F.conv2d(
            x, torch.cat([blk.downsample[0].weight for blk in first]), stride=first[0].downsample[0].stride)
        reduced = torch.split(reduced, [blk.conv1.out_channels for blk in first], 1)
        shortcut = torch.split(shortcut, [blk.downsample[0].out_channels for blk in first], 1)
        # index rather than iterate the splits: FX tracing cannot iterate a traced tensor
        return [self._run(lambda r, s, blk=blk: blk.forward_reduced(r, blk.downsample[1](s)), reduced[i], shortcut[i])
                for i, blk in enumerate(first)]

    @torch.jit.unused
    def _branch_depth(self, d: int, x: torch.Tensor, xs: List[torch.Tensor]) -> List[torch.Tensor]:
        """Every branch's output after its block `d` (`xs`: their outputs before it; `x`: the shared input, read
        by the fused entry at d == 0); the attention is applied after the last block. The one branch forward
        of `forward_features` and `forward_intermediates` (TorchScript uses `MultiScaleBranch.forward`)."""
        if d == 0 and self.fuse_branch_entry:
            xs = self._branch_entry(x)
        else:
            xs = [self._run(branch.blocks[d], bx) for branch, bx in zip(self.branches, xs)]
        if d == len(self.branches[0].blocks) - 1:
            xs = [self._run(branch.attn, bx) for branch, bx in zip(self.branches, xs)]
        return xs

    def _branches_forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            outs: List[torch.Tensor] = []
            for branch in self.branches:
                outs.append(branch(x))
            return torch.cat(outs, 1)
        xs = [x] * len(self.branches)
        for d in range(len(self.branches[0].blocks)):
            xs = self._branch_depth(d, x, xs)
        return torch.cat(xs, 1)

    @torch.jit.ignore
    def _run(self, module, *args: torch.Tensor) -> torch.Tensor:
        return checkpoint(module, *args) if self.grad_checkpointing else module(*args)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward features that returns intermediates.

        Feature indices: 0 stem (after act1), 1.. pre-extractor stages, then one per branch depth: the
        branch outputs of that depth concatenated along channels; the last is the fused,
        attention-refined map that `forward_features` returns.

        Args:
            x: Input image tensor.
            indices: Take last n features if int, all if None, select matching indices if sequence.
            norm: Unused (no final norm layer), kept for API compatibility.
            stop_early: Stop once the last requested feature is computed.
            output_fmt: Only 'NCHW'.
            intermediates_only: Return only the list of intermediates.
        """
        assert output_fmt in ('NCHW',), 'Output shape must be NCHW.'
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)

        if self.input_grey is not None:
            x = self.input_grey(x)
        x = self.act1(self.bn1(self.conv1(x)))
        if 0 in take_indices:
            intermediates.append(x)
        x = self.maxpool(x)

        feat_idx = 0
        for stage in (self.layer1, self.layer2):
            feat_idx += 1
            if stop_early and feat_idx > max_index:
                break
            x = self._run(stage, x)
            if feat_idx in take_indices:
                intermediates.append(x)

        if len(self.branches) and not (stop_early and feat_idx >= max_index):
            xs = [x] * len(self.branches)
            num_depths = len(self.branches[0].blocks)
            for d in range(num_depths):
                feat_idx += 1
                xs = self._branch_depth(d, x, xs)
                if feat_idx in take_indices or d == num_depths - 1:
                    x = torch.cat(xs, 1)
                    if feat_idx in take_indices:
                        intermediates.append(x)
                if stop_early and feat_idx >= max_index:
                    break

        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Replace every layer after the last requested feature with Identity (or drop the branches)."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        if max_index < 2:
            self.layer2 = nn.Identity()
        if max_index < 1:
            self.layer1 = nn.Identity()
            self.maxpool = nn.Identity()  # the stem feature is taken before the pooling
        first_branch_idx = 3
        if max_index < first_branch_idx:
            self.branches = nn.ModuleList()
            self.fuse_branch_entry = False
        else:
            for branch in self.branches:
                num_depths = len(branch.blocks)
                for d in range(num_depths):
                    if first_branch_idx + d > max_index:
                        branch.blocks[d] = nn.Identity()
                if first_branch_idx + num_depths - 1 > max_index:
                    branch.attn = nn.Identity()
        self.num_features = self.feature_info[max_index]['num_chs']  # what forward_features now returns
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_grey is not None:
            x = self.input_grey(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq([self.layer1, self.layer2], x, flatten=True)
        else:
            x = self.layer1(x)
            x = self.layer2(x)
        if len(self.branches):
            x = self._branches_forward(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = self.forward_head(x)
        return x


class MSANetFeatures(FeatureGetterNet):
    """features_only wrapper: timm's FeatureGetterNet (the branches run in parallel, so features come
    from forward_intermediates, not module hooks) that also passes set_grad_checkpointing through, as
    detection and segmentation trainers call it on their backbone."""

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: MSANet) -> Dict[str, torch.Tensor]:
    """Accept native MSA-Net weights as they are; load a ResNet-18 checkpoint into the pre-extractor.

    A ResNet-18 state dict (timm/torchvision key names, optionally with a DataParallel `module.`
    prefix, as MS-Celeb-1M face checkpoints often have) provides conv1/bn1/layer1/layer2. Everything
    else (branches, head) keeps the model's fresh init, so the result loads strictly.
    """
    state_dict = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state_dict.items()}
    if any(k.startswith('branches.') for k in state_dict):
        return state_dict

    out = model.state_dict()
    wanted = [k for k in out if k.startswith(PRE_EXTRACTOR_PREFIXES)]
    missing = [k for k in wanted if k not in state_dict and not k.endswith('num_batches_tracked')]
    if missing:
        raise RuntimeError(
            f'Checkpoint is neither an MSA-Net state dict (keys under "branches.") nor a ResNet-18 state dict '
            f'with timm/torchvision key names: {len(missing)} pre-extractor keys are missing, e.g. '
            f'{missing[:3]}. First keys found: {list(state_dict)[:5]}')
    for k in wanted:
        if k in state_dict:
            out[k] = state_dict[k]
    return out


def _create_msanet(variant: str, pretrained: bool = False, **kwargs) -> MSANet:
    overlay = kwargs.get('pretrained_cfg_overlay') or {}
    # an overlay that names other weights (file=..., url=...) without notes of its own: the cfg's notes describe
    # the registered weights, not those
    other_weights = any(overlay.get(k) for k in ('file', 'url', 'hf_hub_id', 'state_dict')) and 'notes' not in overlay
    if pretrained and not other_weights and 'grey_input' not in kwargs and kwargs.get('in_chans', 3) == 3:
        # weights trained on grey faces say so in their cfg notes (the packaged releases, their Hub and local-dir
        # configs): they get their grey step wherever they are loaded, by timm's scripts as by the package's
        # tools. Without pretrained weights nothing was trained on grey: a fresh model takes colour as it is.
        cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get('pretrained_cfg'), pretrained_cfg_overlay=overlay)
        kwargs['grey_input'] = GREY_INPUT_NOTE in tuple(cfg.notes or ())
    model = build_model_with_cfg(
        MSANet,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls=MSANetFeatures),
        **kwargs,
    )
    if isinstance(model.pretrained_cfg.get('label_names'), list):  # a JSON config's list: a tuple, as registered
        model.pretrained_cfg['label_names'] = tuple(model.pretrained_cfg['label_names'])
    return model


def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        'num_classes': 7, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        # aligned faces are resized whole, as every FER codebase evaluates: no center crop
        'crop_pct': 1.0, 'crop_mode': 'squash', 'interpolation': 'bilinear',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'conv1', 'classifier': 'head.fc',
        'label_names': FER7_LABELS,
        'paper_name': 'Multi-branch Multi-Scale Attention Network for Facial Expression Recognition (FER) in-the-Wild',
        **kwargs,
    }


def _release_cfg(dataset: str, title: str, label_names: Tuple[str, ...], metrics: str, framing: str,
                 temperature: str, img_size: int = 64) -> Dict[str, Any]:
    """A packaged release trained on grey faces at `img_size` px (its cfg input size is the size it was trained
    at: a model trained at 64 px does not carry over to 224 px): weights installed beside this file."""
    pool = -(-img_size // 32)  # the map the head pools: the network's stride is 32
    return _cfg(
        file=os.path.join(_WEIGHTS_DIR, f'msanet_r18_{dataset}.safetensors'),
        num_classes=len(label_names), label_names=label_names, input_size=(3, img_size, img_size),
        pool_size=(pool, pool),
        license='other', origin_url=None, description=f'MSA-Net trained on {title} ({len(label_names)} classes)',
        notes=(f'dataset={dataset}; research / non-commercial dataset licence; {metrics}', GREY_INPUT_NOTE,
               f'face framing: {framing}',
               f'calibration: temperature={temperature} (fitted on the validation split by timm-msanet calibrate; '
               f'probabilities are softmax(logits / temperature))'),
    )


# Only tags whose weights exist. The FER-trained releases are plain data here (their metrics, protocol and the
# checks on them are in releases.py, whose `published_cfgs` a test compares with these). `fer2013` (packaged with
# the wheel, 64 px, trained on FER2013 by examples/release.sh) is msanet_r18's default tag, so `pretrained=True`
# gives a real expression model offline. `tv_in1k`: timm's ImageNet ResNet-18 in the pre-extractor, branches and
# head fresh (the paper's starting point, named explicitly by the recipes).
default_cfgs = generate_default_cfgs({
    'msanet_r18.fer2013': _release_cfg(
        'fer2013', 'FER2013', FER7_LABELS, 'accuracy=0.6679, mean_class_accuracy=0.6376, ece=0.0286',
        'eye_y=0.396 eye_dist=0.362', '0.8343'),
    'msanet_r18.tv_in1k': _cfg(
        hf_hub_id='timm/resnet18.tv_in1k', license='bsd-3-clause', origin_url='https://github.com/pytorch/vision'),
    'msanet_r18_ms.tv_in1k': _cfg(
        hf_hub_id='timm/resnet18.tv_in1k', license='bsd-3-clause', origin_url='https://github.com/pytorch/vision'),
    'msanet_r18_as.tv_in1k': _cfg(
        hf_hub_id='timm/resnet18.tv_in1k', license='bsd-3-clause', origin_url='https://github.com/pytorch/vision'),
    'msanet_r18.ferplus': _release_cfg(
        'ferplus', 'FERPlus', FER8_LABELS, 'accuracy=0.8258, mean_class_accuracy=0.5877, ece=0.0351',
        'eye_y=0.395 eye_dist=0.361', '0.7927'),
})


@register_model
def msanet_r18(pretrained: bool = False, **kwargs) -> MSANet:
    """MSA-Net with a ResNet-18 pre-extractor and three branches (7x7, 5x5, 3x3), each with CBAM."""
    model_args = dict(branch_kernels=(7, 5, 3), attn_layer='cbam')
    return _create_msanet('msanet_r18', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def msanet_r18_ms(pretrained: bool = False, **kwargs) -> MSANet:
    """One 3x3 multi-scale branch, no attention: the paper's Table 3 "MS" ablation."""
    model_args = dict(branch_kernels=(3,), attn_layer=None)
    return _create_msanet('msanet_r18_ms', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def msanet_r18_as(pretrained: bool = False, **kwargs) -> MSANet:
    """One 3x3 multi-scale branch with CBAM: the paper's Table 3 "AS" ablation."""
    model_args = dict(branch_kernels=(3,), attn_layer='cbam')
    return _create_msanet('msanet_r18_as', pretrained=pretrained, **dict(model_args, **kwargs))
