"""ExpressionModel (the record every tool takes) and the engine on it (Classifier, Batcher): real timm models."""
import warnings

import pytest
import timm
import torch
from PIL import Image

from timm_msanet import FER7_LABELS
from timm_msanet.loading import ExpressionModel, WeightsSource, calibrated, load_expression_model, load_model
from timm_msanet.notes import GREY_INPUT_NOTE, set_temperature


def test_the_loader_makes_the_record_once_and_tools_get_it_back():
    record = load_expression_model('msanet_r18')
    assert record.source == WeightsSource(kind='registered', name='msanet_r18')
    assert record.label_names == FER7_LABELS and record.temperature == pytest.approx(0.8343)
    assert record.grey_input and record.grey_step and not record.needs_grey_transform
    assert record.framing_recorded and record.framing == dict(eye_y=0.396, eye_dist=0.362)
    assert ExpressionModel.of(record.module) == record and ExpressionModel.of(record) is record
    # the provenance is the record's: nothing of it is written into timm's cfg
    assert not {'checkpoint', 'checkpoint_weights', 'random_weights', 'config'} & set(record.pretrained_cfg)


def test_a_module_built_elsewhere_gets_a_record_from_its_cfg():
    model = timm.create_model('msanet_r18', pretrained=False)
    record = ExpressionModel.of(model)
    # timm gives a model without weights its default tag's cfg: the record reads what that cfg says
    assert record.source.kind == 'module' and record.temperature == pytest.approx(0.8343) and not record.grey_step
    assert record.untrained_reason() is None  # provenance unknown: no warning on a guess
    r18 = ExpressionModel.of(timm.create_model('resnet18', pretrained=False, num_classes=3))
    assert r18.label_names == ('0', '1', '2')  # no names and no canonical set: the output indices
    random = load_expression_model('msanet_r18', pretrained=False)
    assert random.source.kind == 'random' and 'random weights' in random.untrained_reason()
    with pytest.warns(UserWarning, match='meaningless'):
        random.warn_if_untrained()


def test_something_that_is_not_a_model_is_refused_by_name(tmp_path):
    """A list, a path or a state dict where a model belongs gets a TypeError saying what was expected (it got
    'cannot create weak reference to 'list' object'); images and model swapped in predict say so."""
    from timm_msanet.inference.predict import predict
    for wrong in (['face.png'], {'conv1.weight': torch.zeros(1)}):
        with pytest.raises(TypeError, match=rf'expected a model \(a torch nn.Module .*got {type(wrong).__name__}$'):
            ExpressionModel.of(wrong)
    model = timm.create_model('msanet_r18', pretrained=False)
    face = tmp_path / 'face.png'
    Image.new('RGB', (48, 48), (90, 90, 90)).save(face)
    with pytest.raises(TypeError, match=r'predict\(inputs, model\): the images come first'):
        predict(model, [str(face)])
    assert predict([str(face)], model)[0]['label'] in FER7_LABELS


def test_a_replaced_cfg_is_read_again_and_writes_go_through_the_record():
    model = load_model('msanet_r18')
    record = ExpressionModel.of(model)
    set_temperature(model, 2.0)  # timm-style: the cfg dict is replaced
    assert ExpressionModel.of(model).temperature == 2.0 and ExpressionModel.of(model).source.kind == 'registered'
    record.set_temperature(1.5, 'validation')
    assert record.temperature == 1.5 and any('temperature=1.5000' in n for n in model.pretrained_cfg['notes'])
    record.set_input_size(96)
    assert model.pretrained_cfg['input_size'] == (3, 96, 96) and model.pretrained_cfg['pool_size'] == (3, 3)
    assert record.data_config()['input_size'] == (3, 96, 96)
    with pytest.raises(ValueError, match='one name per class'):
        record.set_label_names(['a', 'b'])


def test_grey_conversion_is_decided_once_in_the_record(astronaut):
    """A grey-trained model without its own grey step gets the image made grey by the transform; one with the step
    takes colour; both see the same tensor after their first step."""
    own_step = load_model('msanet_r18')
    no_step = timm.create_model('msanet_r18', pretrained=True, grey_input=False)
    no_record = ExpressionModel.of(no_step)
    assert no_record.grey_input and not no_record.grey_step and no_record.needs_grey_transform
    photo = Image.fromarray(astronaut).resize((64, 64))
    x_own = ExpressionModel.of(own_step).transform()[0](photo).unsqueeze(0)
    x_no = no_record.transform()[0](photo).unsqueeze(0)
    assert not torch.equal(x_own, x_no)
    with torch.no_grad():
        assert torch.allclose(own_step.input_grey(x_own), x_no, atol=2e-2)
    assert GREY_INPUT_NOTE in own_step.pretrained_cfg['notes']


def test_the_batcher_gives_each_group_its_own_probabilities_in_order(astronaut):
    """Groups of 3, 0, 1 and 2 crops across batches of 2: every group comes out once, in input order, as soon as
    complete, with the probabilities of classifying each crop alone; the module's train mode is restored."""
    record = load_expression_model('msanet_r18')
    record.module.train()
    engine = record.engine(batch_size=2)
    photo = Image.fromarray(astronaut)
    crops = [photo.crop((x, y, x + 200, y + 200)) for x, y in ((150, 0), (0, 0), (300, 300), (100, 100), (50, 250),
                                                                 (250, 50))]
    tensors = [engine.transform(c) for c in crops]
    groups = [('a', tensors[0:3]), ('b', []), ('c', tensors[3:4]), ('d', tensors[4:6])]
    batcher = engine.batcher()
    out = []
    for key, group in groups:
        done = batcher.add(key, group)
        assert all(k not in dict(out) for k, _ in done)
        out += done
    out += batcher.finish()
    assert [k for k, _ in out] == ['a', 'b', 'c', 'd'] and [len(p) for _, p in out] == [3, 0, 1, 2]
    flat = [p for _, probs in out for p in probs]
    alone = [engine.probabilities(t.unsqueeze(0))[0].tolist() for t in tensors]
    assert torch.allclose(torch.tensor(flat), torch.tensor(alone), atol=1e-5)
    assert record.module.training  # the engine ran in eval mode and gave the mode back
    logits = engine.logits(torch.stack(tensors[:2]))
    assert torch.allclose(engine.probabilities(torch.stack(tensors[:2])), calibrated(logits, record.temperature))
    assert torch.allclose(torch.tensor(engine.classify(crops[:3])), torch.tensor(flat[:3]), atol=1e-5)


def test_the_engine_shrinks_the_batch_to_the_memory_budget_once(monkeypatch):
    record = load_expression_model('msanet_r18')
    per_image = record.activation_bytes((3, 64, 64))
    assert per_image > 0 and record.activation_bytes((3, 64, 64)) == per_image  # measured once per size
    from timm_msanet.loading import checks
    monkeypatch.setattr(checks, 'memory_budget', lambda: per_image * 3)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert record.engine(batch_size=32).batch_size == 3


def test_a_dropped_model_is_freed():
    """The loader remembers a module's source without keeping the module alive."""
    import gc
    import weakref
    record = load_expression_model('msanet_r18')
    record.engine(batch_size=2)  # measures and remembers its activation memory
    gone = weakref.ref(record.module)
    del record
    gc.collect()
    assert gone() is None
