"""MSA-Net model: architecture, the timm model API, pretrained loading. Real timm, real files, no network."""
import re

import pytest
import torch
import torch.nn as nn
import timm
import timm.optim
from timm.layers.cbam import CbamModule
from safetensors.torch import save_file

import timm_msanet
from timm_msanet import FER7_LABELS, FER8_LABELS, MSANet, MultiScaleBlock
from timm_msanet.msanet import checkpoint_filter_fn

MODELS = ['msanet_r18', 'msanet_r18_ms', 'msanet_r18_as']


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _x(b=2, size=224, chans=3):
    return torch.randn(b, chans, size, size)


def test_labels_are_sorted_so_folder_order_is_class_order():
    assert list(FER7_LABELS) == sorted(FER7_LABELS) and len(FER7_LABELS) == 7
    assert list(FER8_LABELS) == sorted(FER8_LABELS) and set(FER8_LABELS) - set(FER7_LABELS) == {'contempt'}


def test_registered_and_cfg():
    assert set(MODELS) <= set(timm.list_models('msanet*'))
    for name in MODELS:
        assert f'{name}.tv_in1k' in timm.list_pretrained(name + '.*')
        cfg = timm.create_model(f'{name}.tv_in1k').pretrained_cfg
        assert cfg['num_classes'] == 7 and cfg['label_names'] == FER7_LABELS
        assert cfg['crop_pct'] == 1.0 and cfg['crop_mode'] == 'squash' and cfg['interpolation'] == 'bilinear'
        assert cfg['first_conv'] == 'conv1' and cfg['classifier'] == 'head.fc'
        assert cfg['hf_hub_id'] == 'timm/resnet18.tv_in1k'
        for key in ('license', 'paper_name', 'origin_url'):
            assert cfg[key]
    # timm's data pipeline sees the FER config: plain resize of the whole face, no center crop
    data_cfg = timm.data.resolve_data_config({}, model=timm.create_model('msanet_r18'))
    assert data_cfg['crop_pct'] == 1.0 and data_cfg['crop_mode'] == 'squash'


def test_stage_shapes_at_224():
    model = timm.create_model('msanet_r18').eval()
    feats = model.forward_intermediates(_x(), intermediates_only=True)
    assert [tuple(f.shape[1:]) for f in feats] == [
        (64, 112, 112), (64, 56, 56), (128, 28, 28), (768, 14, 14), (1536, 7, 7)]
    # the pre-extractor output is the paper's 128 x 28 x 28
    assert tuple(model.layer2(model.layer1(model.maxpool(model.act1(model.bn1(model.conv1(_x())))))).shape) == \
        (2, 128, 28, 28)
    assert model(_x()).shape == (2, 7)


def test_branch_kernels_and_attention():
    model = timm.create_model('msanet_r18')
    assert [b.blocks[0].kernel_size for b in model.branches] == [7, 5, 3]
    for branch, k in zip(model.branches, (7, 5, 3)):
        for block in branch.blocks:
            assert all(c.kernel_size == (k, k) for c in block.convs)
        assert isinstance(branch.attn, CbamModule)
    ms = timm.create_model('msanet_r18_ms')
    assert len(ms.branches) == 1 and isinstance(ms.branches[0].attn, nn.Identity)
    as_ = timm.create_model('msanet_r18_as')
    assert len(as_.branches) == 1 and isinstance(as_.branches[0].attn, CbamModule)


def _support_width(module, in_chs, size):
    """Width in input pixels of the gradient support of the centre output position (measured RF)."""
    x = torch.randn(1, in_chs, size, size, requires_grad=True)
    y = module(x)
    c = y.shape[-1] // 2
    y[0, :, c, c].sum().backward()
    cols = x.grad.abs().sum(dim=(0, 1, 2)) > 0
    idx = cols.nonzero().flatten()
    return int(idx.max() - idx.min() + 1)


def test_measured_receptive_field_orders_branches_7_5_3():
    # zero_init_last would zero the residual branches and leave only the 1x1 shortcuts
    model = MSANet(zero_init_last=False).eval()
    widths = [_support_width(b.blocks, 128, 96) for b in model.branches]
    assert widths[0] > widths[1] > widths[2] > 1, widths


@pytest.mark.parametrize('hierarchy,expected', [('pre', 1 + 4 * 2), ('post', 3)])
def test_block_hierarchy_receptive_field(hierarchy, expected):
    # linear block (no ReLU) so the support is exact: 'pre' chains 4 3x3 convs, 'post' sums parallel ones
    block = MultiScaleBlock(32, 32, kernel_size=3, scale=4, hierarchy=hierarchy, act_layer=nn.Identity).eval()
    nn.init.ones_(block.bn3.weight)
    assert _support_width(block, 32, 31) == expected


def test_block_matches_equations():
    x = torch.randn(2, 16, 12, 12)
    for hierarchy in ('pre', 'post'):
        block = MultiScaleBlock(16, 32, kernel_size=5, scale=4, hierarchy=hierarchy).eval()
        nn.init.normal_(block.bn3.weight)
        with torch.no_grad():
            out = block.act(block.bn1(block.conv1(x)))
            xs = torch.split(out, block.width, 1)
            p = [lambda t, i=i: block.act(block.bns[i](block.convs[i](t))) for i in range(4)]
            ys = [p[0](xs[0])]
            for i in range(1, 4):
                ys.append(p[i](xs[i] + ys[-1]) if hierarchy == 'pre' else p[i](xs[i]) + ys[-1])
            ref = block.act(block.bn3(block.conv3(torch.cat(ys, 1))) + block.downsample(x))
            torch.testing.assert_close(block(x), ref)


def test_strided_pre_block_keeps_hierarchy():
    block = MultiScaleBlock(16, 32, kernel_size=3, stride=2, scale=4, hierarchy='pre')
    assert block.convs[0].stride == (2, 2) and all(c.stride == (1, 1) for c in block.convs[1:])
    assert block.pool is not None
    assert block(torch.randn(1, 16, 14, 14)).shape == (1, 32, 7, 7)
    post = MultiScaleBlock(16, 32, kernel_size=3, stride=2, hierarchy='post')
    assert all(c.stride == (2, 2) for c in post.convs) and post.pool is None


def test_block_rejects_bad_arguments():
    with pytest.raises(ValueError, match='hierarchy'):
        MultiScaleBlock(8, 8, hierarchy='sideways')
    with pytest.raises(ValueError, match='odd'):
        MultiScaleBlock(8, 8, kernel_size=4)
    with pytest.raises(ValueError, match='too thin'):
        MultiScaleBlock(8, 8, scale=8, bottle_ratio=0.5)


def test_multiscale_block_is_public_and_reusable():
    assert timm_msanet.MultiScaleBlock is MultiScaleBlock
    seq = nn.Sequential(MultiScaleBlock(3, 16, kernel_size=7, stride=2), MultiScaleBlock(16, 16))
    assert seq(torch.randn(1, 3, 32, 32)).shape == (1, 16, 16, 16)


def test_forward_head_and_classifier_api():
    model = timm.create_model('msanet_r18').eval()
    x = _x()
    feats = model.forward_features(x)
    assert feats.shape == (2, 1536, 7, 7)
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (2, 1536) and model.num_features == model.head_hidden_size == 1536
    torch.testing.assert_close(model.forward_head(feats), model.get_classifier()(pre))
    assert model.get_classifier(name_only=True) == 'head.fc'
    model.reset_classifier(10)
    assert model(x).shape == (2, 10) and model.num_classes == 10
    model.reset_classifier(0)
    assert model(x).shape == (2, 1536)
    assert timm.create_model('msanet_r18', num_classes=0)(x).shape == (2, 1536)
    assert timm.create_model('msanet_r18', num_classes=0, global_pool='')(x).shape == (2, 1536, 7, 7)


def test_features_only():
    model = timm.create_model('msanet_r18', features_only=True).eval()
    assert model.feature_info.channels() == [64, 64, 128, 768, 1536]
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    outs = model(_x(1))
    assert [o.shape[1] for o in outs] == model.feature_info.channels()
    assert [224 // o.shape[-1] for o in outs] == model.feature_info.reduction()
    two = timm.create_model('msanet_r18', features_only=True, out_indices=(2, 4)).eval()
    assert [o.shape[1] for o in two(_x(1))] == [128, 1536]


def test_forward_intermediates_and_prune():
    model = timm.create_model('msanet_r18').eval()
    x = _x(1)
    final, inters = model.forward_intermediates(x)
    torch.testing.assert_close(final, model.forward_features(x))
    assert len(inters) == 5
    sel = model.forward_intermediates(x, indices=[1, 3], intermediates_only=True)
    torch.testing.assert_close(sel[0], inters[1])
    torch.testing.assert_close(sel[1], inters[3])
    early = model.forward_intermediates(x, indices=[2], stop_early=True, intermediates_only=True)
    torch.testing.assert_close(early[0], inters[2])

    for keep in (3, 2):
        pruned = timm.create_model('msanet_r18').eval()
        pruned.load_state_dict(model.state_dict())
        take = pruned.prune_intermediate_layers(indices=[keep])
        assert take == [keep]
        out = pruned.forward_intermediates(x, indices=[keep], intermediates_only=True)
        torch.testing.assert_close(out[0], inters[keep])
        n_full = sum(p.numel() for p in model.parameters())
        assert sum(p.numel() for p in pruned.parameters()) < n_full


def test_grad_checkpointing_same_result():
    model = timm.create_model('msanet_r18', drop_rate=0.0)
    x = _x(2, 96)
    out_ref = model(x)
    out_ref.sum().backward()
    grads_ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(out, out_ref)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads_ref[n], msg=n)


def test_every_parameter_gets_a_gradient():
    # DDP without find_unused_parameters needs this
    model = timm.create_model('msanet_r18', drop_path_rate=0.1, drop_rate=0.2).train()
    model(_x(2, 96)).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_group_matcher_orders_branches_after_pre_extractor():
    from timm.models._manipulate import group_parameters
    model = timm.create_model('msanet_r18')
    groups = group_parameters(model, model.group_matcher())
    order = [names for names in groups.values()]
    first_of = {re.sub(r'\.(weight|bias|running_.*)$', '', names[0]).split('.')[0]: i for i, names in enumerate(order)}
    assert first_of['conv1'] == 0
    assert first_of['layer1'] < first_of['layer2'] < first_of['branches'] < first_of['head']
    # branch depth 0 of every branch shares a group; attention sits after the last block
    g = next(names for names in order if any(n.startswith('branches.0.blocks.0') for n in names))
    assert any(n.startswith('branches.2.blocks.0') for n in g)
    assert len(group_parameters(model, model.group_matcher(coarse=True))) < len(order)
    # --layer-decay path of timm's optimizer factory
    opt = timm.optim.create_optimizer_v2(model, 'sgd', lr=0.1, weight_decay=1e-4, layer_decay=0.7)
    scales = sorted({g['lr_scale'] for g in opt.param_groups})
    assert len(scales) >= 6 and scales[-1] == 1.0


def test_no_weight_decay_on_norm_and_bias():
    model = timm.create_model('msanet_r18')
    opt = timm.optim.create_optimizer_v2(model, 'adamw', lr=1e-3, weight_decay=0.05)
    no_decay = [g for g in opt.param_groups if g['weight_decay'] == 0.0]
    assert no_decay and all(p.ndim <= 1 for g in no_decay for p in g['params'])


def test_in_chans_1_and_drop_path_schedule():
    model = timm.create_model('msanet_r18', in_chans=1, drop_path_rate=0.2, drop_rate=0.3)
    assert model.conv1.in_channels == 1
    assert model.eval()(_x(1, 112, chans=1)).shape == (1, 7)
    pre = [m.drop_path.drop_prob for m in (*model.layer1, *model.layer2) if m.drop_path is not None]
    per_branch = [[blk.drop_path.drop_prob for blk in b.blocks] for b in model.branches]
    # linear over depth: 4 pre-extractor blocks (the first at 0), then 2 branch depths shared by the branches
    assert pre == sorted(pre) and len(pre) == 3 and max(pre) < per_branch[0][0]
    assert per_branch[0] == per_branch[1] == per_branch[2] and per_branch[0][-1] == pytest.approx(0.2)
    assert model.head.drop.p == 0.3
    model.train()
    x = _x(2, 64, chans=1)
    assert not torch.allclose(model(x), model(x))  # stochastic in training


def test_channels_last_and_bf16_autocast():
    model = timm.create_model('msanet_r18').eval()
    x = _x(2, 112)
    ref = model(x)
    model_cl = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model_cl(x.to(memory_format=torch.channels_last)), ref, rtol=1e-4, atol=1e-4)
    model.train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    out.float().sum().backward()
    assert model.conv1.weight.grad is not None


def test_torchscript():
    model = timm.create_model('msanet_r18').eval()
    x = _x(1, 96)
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), model(x))


def test_fx_feature_extraction():
    from timm.models import create_feature_extractor, get_graph_node_names
    model = timm.create_model('msanet_r18').eval()
    _, eval_nodes = get_graph_node_names(model)
    fused_node = [n for n in eval_nodes if n.startswith('cat')][-1]  # the branch concatenation
    assert 'layer2.1.act2' in eval_nodes
    extractor = create_feature_extractor(model, return_nodes={'layer2.1.act2': 'pre', fused_node: 'fused'})
    x = _x(1, 96)
    out = extractor(x)
    assert out['pre'].shape == (1, 128, 12, 12) and out['fused'].shape == (1, 1536, 3, 3)
    torch.testing.assert_close(out['fused'], model.forward_features(x))


@pytest.mark.slow
def test_torch_compile_matches_eager():
    # fullgraph: dynamo must capture the whole model, no graph break; the aot_eager backend runs dynamo and
    # AOTAutograd (what torch.compile traces) without inductor's C++ code generation, which is torch's own code
    # and took 80 s of this suite on 2 cores. `timm-msanet bench --compile` runs inductor itself.
    model = timm.create_model('msanet_r18').eval()
    x = _x(2, 64)
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


def test_onnx_export_dynamic_batch(tmp_path):
    ort = pytest.importorskip('onnxruntime')
    model = timm.create_model('msanet_r18').eval()
    path = tmp_path / 'msanet.onnx'
    batch = torch.export.Dim('batch', min=1, max=64)
    torch.onnx.export(model, (_x(2, 112),), str(path), dynamo=True, input_names=['input'], output_names=['logits'],
                      dynamic_shapes={'x': {0: batch}})
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    for b in (1, 3):
        x = _x(b, 112)
        (got,) = sess.run(None, {'input': x.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), model(x).detach(), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- pretrained loading, no network

def _resnet18_state(tmp_path, prefix=''):
    resnet = timm.create_model('resnet18', num_classes=1000)
    sd = {prefix + k: v.contiguous() for k, v in resnet.state_dict().items() if not k.endswith('num_batches_tracked')}
    path = tmp_path / 'resnet18.safetensors'
    save_file(sd, str(path))
    return resnet.state_dict(), path


def _assert_pre_extractor_loaded(model, resnet_sd, check_conv1=True):
    msd = model.state_dict()
    for k, v in resnet_sd.items():
        if k.startswith(('conv1.', 'bn1.', 'layer1.', 'layer2.')) and not k.endswith('num_batches_tracked'):
            if k == 'conv1.weight' and not check_conv1:
                continue
            torch.testing.assert_close(msd[k], v, msg=k)


@pytest.mark.parametrize('name', MODELS)
def test_pretrained_from_local_resnet18_safetensors(tmp_path, name):
    resnet_sd, path = _resnet18_state(tmp_path)
    fresh = timm.create_model(name)
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    _assert_pre_extractor_loaded(model, resnet_sd)
    # branches and head keep a fresh init (not copied from anywhere)
    assert model.head.fc.weight.shape == (7, model.num_features)
    assert not any(k.startswith('branches.') for k in resnet_sd)
    assert fresh.state_dict().keys() == model.state_dict().keys()


def test_pretrained_dataparallel_prefix_grayscale_and_num_classes(tmp_path):
    resnet_sd, path = _resnet18_state(tmp_path, prefix='module.')
    model = timm.create_model('msanet_r18', pretrained=True, in_chans=1, num_classes=8,
                              pretrained_cfg_overlay=dict(file=str(path)))
    _assert_pre_extractor_loaded(model, resnet_sd, check_conv1=False)
    # timm's in_chans adaptation of the first conv: RGB kernels summed for one channel
    torch.testing.assert_close(model.conv1.weight, resnet_sd['conv1.weight'].sum(dim=1, keepdim=True))
    assert model(_x(1, 64, chans=1)).shape == (1, 8)


def test_native_msanet_checkpoint_round_trip(tmp_path):
    model = timm.create_model('msanet_r18', num_classes=7)
    path = tmp_path / 'msanet.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = timm.create_model('msanet_r18', pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = _x(1, 96)
    torch.testing.assert_close(loaded(x), model.eval()(x))


def test_wrong_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / 'other.safetensors'
    save_file({'backbone.weight': torch.zeros(3)}, str(path))
    with pytest.raises(RuntimeError, match='neither an MSA-Net state dict .* nor a ResNet-18'):
        timm.create_model('msanet_r18', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    with pytest.raises(RuntimeError, match='49 pre-extractor keys are missing'):
        checkpoint_filter_fn({'conv1.weight': torch.zeros(64, 3, 7, 7)}, MSANet())


def test_tv_in1k_tag_loads_timm_resnet18_through_the_hub_cache_offline(tmp_path, make_offline_hub_cache, run_python):
    """The tv_in1k tag resolves `timm/resnet18.tv_in1k` with huggingface_hub, here from an offline cache."""
    resnet_sd, path = _resnet18_state(tmp_path)
    make_offline_hub_cache(tmp_path / 'hf', 'timm/resnet18.tv_in1k', {'model.safetensors': path})
    ref = tmp_path / 'ref.safetensors'
    save_file({k: v.contiguous() for k, v in resnet_sd.items()}, str(ref))
    proc = run_python(f"""
        import timm, torch
        from safetensors.torch import load_file
        ref = load_file({str(ref)!r})
        m = timm.create_model('msanet_r18.tv_in1k', pretrained=True)
        sd = m.state_dict()
        assert torch.equal(sd['layer2.1.conv2.weight'], ref['layer2.1.conv2.weight'])
        assert torch.equal(sd['conv1.weight'], ref['conv1.weight'])
        print('loaded', m.pretrained_cfg['tag'])
    """, dict(HF_HOME=str(tmp_path / 'hf'), HF_HUB_OFFLINE='1'))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'loaded tv_in1k'


def test_tv_in1k_tag_offline_without_cache_fails_clearly(tmp_path, run_python):
    proc = run_python("""
        import timm
        timm.create_model('msanet_r18.tv_in1k', pretrained=True)
    """, dict(HF_HOME=str(tmp_path / 'empty'), HF_HUB_OFFLINE='1'))
    assert proc.returncode != 0
    assert 'resnet18.tv_in1k' in proc.stderr


@pytest.mark.parametrize('grad_checkpointing', [False, True])
def test_fused_branch_entry_equals_reference(grad_checkpointing):
    """The fused first-block convs compute what the per-branch modules compute, in training too."""
    torch.manual_seed(0)
    fused = timm.create_model('msanet_r18', zero_init_last=False)
    ref = timm.create_model('msanet_r18', zero_init_last=False, fuse_branch_entry=False)  # the per-branch path
    ref.load_state_dict(fused.state_dict())
    assert fused.fuse_branch_entry and not ref.fuse_branch_entry
    assert fused.state_dict().keys() == ref.state_dict().keys()
    with pytest.raises(ValueError, match='fuse_branch_entry needs two or more branches'):
        timm.create_model('msanet_r18_as', fuse_branch_entry=True)
    for m in (fused, ref):
        m.set_grad_checkpointing(grad_checkpointing)
    x = _x(2, 96)
    out_f, out_r = fused(x), ref(x)
    torch.testing.assert_close(out_f, out_r, rtol=1e-5, atol=1e-5)
    out_f.square().sum().backward()
    out_r.square().sum().backward()
    grads_r = dict(ref.named_parameters())
    for n, p in fused.named_parameters():
        torch.testing.assert_close(p.grad, grads_r[n].grad, rtol=1e-4, atol=1e-5, msg=n)
    for (n, b), (_, b_ref) in zip(fused.named_buffers(), ref.named_buffers()):  # BN running stats updated alike
        torch.testing.assert_close(b, b_ref, rtol=1e-5, atol=1e-6, msg=n)
    fused.eval()
    ref.eval()
    f_feats = fused.forward_intermediates(x, intermediates_only=True)
    r_feats = ref.forward_intermediates(x, intermediates_only=True)
    for a, b in zip(f_feats, r_feats):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # and both equal the branches' own module forward (the path TorchScript takes)
    with torch.no_grad():
        h = ref.layer2(ref.layer1(ref.maxpool(ref.act1(ref.bn1(ref.conv1(x))))))
        direct = torch.cat([branch(h) for branch in ref.branches], 1)
        torch.testing.assert_close(fused.forward_features(x), direct, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ref.forward_features(x), direct, rtol=1e-5, atol=1e-5)


def test_single_branch_models_do_not_fuse():
    assert not timm.create_model('msanet_r18_as').fuse_branch_entry
