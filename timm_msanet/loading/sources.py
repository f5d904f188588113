"""Every model source behind `load_model`: registered names and packaged releases, checkpoint files, local-dir:
and hf-hub: releases (offline when the Hub does not answer), and what the tools check on the built model.
"""
import contextlib
import os
import re
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Union

from ..utils import safe_json
from ..labels import labels_for
from ..notes import expects_grey_input, set_temperature, temperature_of
from ..releases import pool_size_for
from .checks import CheckpointError, STEERING_KEYS, check_input_size, check_release_config, msanet_archs
from .checkpoint import (CONFIG_DATA_KEYS, WEIGHTS_BESIDE_CONFIG, config_beside, model_from_checkpoint, read_checkpoint,
                         with_config)
from .record import ExpressionModel, WeightsSource


def _hf_cache_hint() -> str:
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE


def _why_offline() -> str:
    from huggingface_hub import constants
    if os.environ.get('HF_HUB_OFFLINE'):
        return f'HF_HUB_OFFLINE={os.environ["HF_HUB_OFFLINE"]}'
    return f'no connection to {constants.ENDPOINT} within {HUB_PROBE_TIMEOUT_S:g} s; HF_HUB_OFFLINE is unset'


def _hub_repo_of(name: str) -> str:
    """The Hub repo holding a registered model tag's weights (`msanet_r18.tv_in1k` -> `timm/resnet18.tv_in1k`)."""
    from timm.models import get_pretrained_cfg
    try:
        cfg = get_pretrained_cfg(name, allow_unregistered=True)
    except Exception:
        cfg = None
    hub_id = getattr(cfg, 'hf_hub_id', None)
    return hub_id.split('@')[0] if hub_id else name


def create_published(name_or_path: str, pretrained: bool = True, num_classes: Optional[int] = None, **kwargs):
    """`timm.create_model` for a published release, with errors that say what to do.

    `name_or_path`: `hf-hub:ORG/NAME`, `local-dir:PATH`, a folder path, `ORG/NAME`, or a registered tag
    such as `msanet_r18.rafdb`. `num_classes`, if given, must match the release: replacing the head is
    fine-tuning, done with `timm.create_model(..., num_classes=N)` directly.
    """
    import importlib
    import timm
    importlib.import_module('timm_msanet')  # registers the models when the autoload hook is off

    name = str(name_or_path)
    if ':' not in name or re.match(r'^[A-Za-z]:[\\/]', name):  # no source prefix (a Windows drive is not one)
        if Path(name).is_dir():
            name = f'local-dir:{name}'
        elif re.fullmatch(r'[\w.-]+/[\w.-]+(@[\w./-]+)?', name):
            name = f'hf-hub:{name}'
    source, _, ident = name.partition(':') if name.startswith(('hf-hub:', 'local-dir:')) else (None, '', name)

    def explain(e: BaseException) -> CheckpointError:
        return load_error(e, source, ident)

    expected = None
    if source in ('hf-hub', 'local-dir'):
        config = _read_release_config(source, ident, explain)
        check_release_config(config, f'{ident}/config.json')
        expected = config.get('num_classes')
        if expected is None and isinstance(config.get('pretrained_cfg'), Mapping):
            expected = config['pretrained_cfg'].get('num_classes')
    if expected is None and pretrained and source is None:
        from timm.models import get_pretrained_cfg
        try:
            pcfg = get_pretrained_cfg(ident, allow_unregistered=True) if '.' in ident else None
        except Exception as e:
            raise explain(e) from e
        expected = getattr(pcfg, 'num_classes', None)
    if num_classes is not None and expected is not None and num_classes != expected:
        raise CheckpointError(
            f'wrong class count: {ident} has {expected} classes ({", ".join(labels_for(expected)) if expected in (7, 8) else "?"}), '
            f'not {num_classes}. Drop num_classes to use it as published; to fine-tune on another class set '
            f'call timm.create_model({name!r}, pretrained=True, num_classes={num_classes}), which replaces the head.')
    if num_classes is not None:
        kwargs['num_classes'] = num_classes
    try:
        with _offline_when_hub_unreachable(needs_hub(name, pretrained)):
            return timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as e:
        raise explain(e) from e


def load_error(e: BaseException, source: Optional[str], ident: str) -> CheckpointError:
    """The CheckpointError that says what to do about an exception of `timm.create_model` on a release."""
    import timm
    from huggingface_hub import errors as hf_errors
    if isinstance(e, hf_errors.LocalEntryNotFoundError) or (
            isinstance(e, OSError) and 'offline' in str(e).lower()):
        repo = ident if source == 'hf-hub' else _hub_repo_of(ident)
        what = ident if repo == ident else f'{ident} (its weights are the Hub repo {repo})'
        return CheckpointError(
            f'{what} is not in the local Hugging Face cache ({_hf_cache_hint()}) and the Hub cannot be '
            f'reached ({_why_offline()}). '
            f'Connect and unset HF_HUB_OFFLINE, download it once while online (`hf download {repo}`), '
            f'or load a local copy with local-dir:PATH.')
    if isinstance(e, hf_errors.GatedRepoError):
        return CheckpointError(f'{ident} is gated on the Hub: accept its terms on https://huggingface.co/{ident} '
                            f'and log in (`hf auth login` or HF_TOKEN).')
    if isinstance(e, hf_errors.RepositoryNotFoundError):
        return CheckpointError(f'repo {ident} was not found on the Hugging Face Hub (or it is private and you are '
                            f'not logged in). Check ORG/NAME; for a private repo run `hf auth login` or set '
                            f'HF_TOKEN.')
    if isinstance(e, hf_errors.RevisionNotFoundError):
        return CheckpointError(f'{ident}: that revision does not exist on the Hub; check the part after "@".')
    if source == 'local-dir' and isinstance(e, FileNotFoundError):
        return CheckpointError(f'folder {ident} has no config.json (or does not exist): give a folder written '
                            f'by `timm-msanet publish --dry-run` or downloaded from a model repo. ({e})')
    if isinstance(e, (hf_errors.EntryNotFoundError, FileNotFoundError)):
        return CheckpointError(f'{ident} has no config.json / model.safetensors: it is not a timm model repo '
                            f'(publish one with `timm-msanet publish`). ({e})')
    msg = str(e)
    if 'Invalid pretrained tag' in msg:
        arch = ident.split('.')[0]
        return CheckpointError(f'{msg} Registered tags: {timm.list_pretrained(arch + ".*")}; FER-trained '
                            f'releases are listed in timm_msanet/releases.py.')
    if 'Unknown model' in msg:
        import difflib
        arch = ident.split('.')[0]
        near = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.75)
        return CheckpointError(f'{arch!r} is not a registered model'
                               + (f'; did you mean {" or ".join(near)}?' if near else '')
                               + f' The msanet models: {", ".join(msanet_archs())}; their pretrained tags: '
                               f'{", ".join(timm.list_pretrained("msanet_*"))}')
    if 'Error(s) in loading state_dict' in msg or 'size mismatch' in msg or 'Missing key' in msg:
        return CheckpointError(f'architecture mismatch: the weights of {ident} do not fit the architecture '
                            f'its config (or your arguments) asks for; do not override model arguments, or '
                            f're-publish the checkpoint with the right --model. ({msg.splitlines()[0]})')
    return CheckpointError(f'cannot load {ident}: {type(e).__name__}: {e}')


def needs_hub(name: str, pretrained: bool = True) -> bool:
    """Whether loading `name` can touch the Hub: an `hf-hub:` source, or a registered tag whose weights are a
    Hub repo rather than a packaged file (the default `msanet_r18` loads offline and is never probed)."""
    if not pretrained or name.startswith('local-dir:'):
        return False
    if name.startswith('hf-hub:'):
        return True
    from timm.models import get_pretrained_cfg
    try:
        cfg = get_pretrained_cfg(name, allow_unregistered=True)
    except Exception:
        return True
    return cfg is not None and not getattr(cfg, 'file', None) and bool(getattr(cfg, 'hf_hub_id', None))


def _read_release_config(source: str, ident: str, explain) -> Any:
    """The raw config.json of a Hub repo or folder, read before timm acts on any of it."""
    try:
        if source == 'hf-hub':
            from huggingface_hub import hf_hub_download
            repo_id, _, revision = ident.partition('@')
            with _offline_when_hub_unreachable(True):
                path = Path(hf_hub_download(repo_id, 'config.json', revision=revision or None))
        else:
            path = Path(ident) / 'config.json'
            if not os.path.lexists(path):
                raise FileNotFoundError(f'Config file not found: {path}')
    except Exception as e:
        raise explain(e) from e
    try:
        return safe_json.read(path)
    except ValueError as e:
        raise CheckpointError(f'{ident}/config.json is not valid JSON ({e}); expected the config.json that '
                              f'`timm-msanet publish` (timm save_for_hf) writes') from None


HUB_PROBE_TIMEOUT_S = 3.0


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub endpoint (HF_ENDPOINT) opens within `timeout` seconds."""
    import socket
    from urllib.parse import urlsplit
    from huggingface_hub import constants
    url = urlsplit(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == 'https' else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _offline_when_hub_unreachable(needed: bool = True):
    """Without a network huggingface_hub retries each request with backoff (about half a minute per file here)
    before it falls back to its cache. One short probe instead: when the Hub endpoint does not answer within
    HUB_PROBE_TIMEOUT_S, run the block in huggingface_hub's offline mode, so cached files load at once and a
    missing one fails at once with the offline error. Its module flag is what HF_HUB_OFFLINE=1 sets."""
    from huggingface_hub import constants
    if not needed or constants.HF_HUB_OFFLINE or hub_reachable():
        yield
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False


def load_model(*args: Any, **kwargs: Any):
    """Create an eval-mode timm model from one source, with `pretrained_cfg['label_names']` set: the module of
    `load_expression_model(*args, **kwargs)` (same arguments), whose record `ExpressionModel.of(model)` gives back."""
    return load_expression_model(*args, **kwargs).module


def load_expression_model(
        model_name: Optional[str] = None,
        checkpoint: Optional[Union[str, Path]] = None,
        hf_hub: Optional[str] = None,
        num_classes: Optional[int] = None,
        label_names: Optional[Sequence[str]] = None,
        use_ema: Optional[bool] = None,
        pretrained: bool = True,
        **kwargs: Any,
) -> ExpressionModel:
    """Load a model from one source as an `ExpressionModel` (the eval-mode module, its facts, its `WeightsSource`).

    Args:
        model_name: A registered name (`msanet_r18`, `msanet_r18.tv_in1k`, `hf-hub:org/repo`,
            `local-dir:path`); with `checkpoint`, the architecture when the checkpoint does not name it.
        checkpoint: A train.py checkpoint, state dict or safetensors file.
        hf_hub: A Hub repo id (`org/name`) published with `timm-msanet publish`.
        num_classes: Class count when it cannot be read from the checkpoint (must agree when it can).
        label_names: Class names in output order (default: from the model cfg, else canonical FER names).
        use_ema: None prefers EMA weights of a train.py checkpoint, True requires them, False skips them.
        pretrained: Load pretrained weights for a plain model name.
        kwargs: timm.create_model arguments (constructor arguments, pretrained_cfg_overlay).
    """
    if checkpoint is not None and hf_hub is not None or (model_name is None and checkpoint is None and hf_hub is None):
        raise ValueError('give one model source: a model name, a checkpoint file (with --model if it does not '
                         'name its architecture) or a Hub repo id')
    if checkpoint is not None:
        model, source, names = _from_checkpoint(checkpoint, model_name, num_classes, use_ema, pretrained, kwargs)
        label_names = names if label_names is None else label_names
    else:
        name = f'hf-hub:{hf_hub}' if hf_hub is not None else model_name
        model = create_published(name, pretrained=pretrained, num_classes=num_classes, **kwargs).eval()
        release = model.pretrained_cfg.get('source') in ('hf-hub', 'local-dir')
        source = WeightsSource(kind='random' if not pretrained else 'release' if release else 'registered', name=name)
    names = _label_names_for(model, label_names, source)
    model.pretrained_cfg = dict(model.pretrained_cfg, label_names=tuple(names), num_classes=model.num_classes)
    check_finite(model, str(checkpoint or hf_hub or model_name))
    return ExpressionModel.from_module(model, source)


def _from_checkpoint(checkpoint, model_name, num_classes, use_ema, pretrained, kwargs):
    """(model, WeightsSource, label names of a config.json beside it or None) of a checkpoint or weights file."""
    refused = sorted(k for k in kwargs if k in STEERING_KEYS and k != 'pretrained_cfg_overlay')
    if refused or not pretrained:
        raise ValueError(f'{", ".join(refused) or "pretrained=False"} cannot apply with a checkpoint: its '
                         f'weights are the checkpoint\'s. Drop it, or load a model name instead.')
    caller_overlay = dict(kwargs.pop('pretrained_cfg_overlay', None) or {})
    overlay, names, config = dict(caller_overlay), None, None
    if Path(checkpoint).is_dir():  # a save_for_hf / publish --dry-run folder
        if not (Path(checkpoint) / WEIGHTS_BESIDE_CONFIG).is_file():
            raise CheckpointError(f'checkpoint {checkpoint} is a folder without {WEIGHTS_BESIDE_CONFIG}: expected '
                                  f'a weights file, or a folder as timm\'s save_for_hf writes it')
        checkpoint = Path(checkpoint) / WEIGHTS_BESIDE_CONFIG
    ckpt = read_checkpoint(checkpoint, use_ema=use_ema)
    beside = config_beside(checkpoint)
    if beside is not None:
        ckpt, config = with_config(ckpt, *beside), str(beside[0])
        pcfg = beside[1].get('pretrained_cfg', beside[1])
        names = beside[1].get('label_names') or pcfg.get('label_names') or None
        overlay = dict({k: pcfg[k] for k in CONFIG_DATA_KEYS if pcfg.get(k) is not None}, **overlay)
        if pcfg.get('temperature') is not None and 'temperature' not in ckpt.extra:
            ckpt.extra = dict(ckpt.extra, temperature=temperature_of(pcfg),
                              temperature_fit_split=pcfg.get('temperature_fit_split', 'validation'))
    model, _ = model_from_checkpoint(ckpt, model_name=model_name, num_classes=num_classes, caller_kwargs=kwargs)
    if overlay.get('input_size') is not None:  # the caller's resolution, with the pool size that goes with it
        overlay['input_size'] = check_input_size(tuple(overlay['input_size']), 'pretrained_cfg_overlay')
        if model.pretrained_cfg.get('pool_size') and 'pool_size' not in caller_overlay:
            overlay['pool_size'] = pool_size_for(overlay['input_size'][1:])
    model.pretrained_cfg = dict(model.pretrained_cfg, **overlay)
    if ckpt.extra.get('notes') and 'notes' not in caller_overlay:  # the file's own grey input and framing
        notes = tuple(model.pretrained_cfg.get('notes') or ())
        model.pretrained_cfg['notes'] = notes + tuple(n for n in ckpt.extra['notes'] if n not in notes)
    if hasattr(model, 'set_grey_input') and model.in_chans == 3 and expects_grey_input(model.pretrained_cfg):
        model.set_grey_input(True)  # known from the file's notes after construction: the model converts itself
    if 'temperature' in ckpt.extra:
        set_temperature(model, ckpt.extra['temperature'], ckpt.extra.get('temperature_fit_split', 'validation'))
    source = WeightsSource(kind='checkpoint', name=str(checkpoint), checkpoint=str(checkpoint), entry=ckpt.weights,
                           entry_origin=ckpt.extra.get('weights_origin'), config=config)
    return model, source, list(names) if names else None


def _label_names_for(model, label_names: Optional[Sequence[str]], source: WeightsSource) -> List[str]:
    """The class names in output order: the caller's, else the cfg's, else the canonical FER names; a release's
    own names are never guessed."""
    n_out = model.num_classes
    names = list(label_names) if label_names is not None else list(model.pretrained_cfg.get('label_names') or [])
    if len(names) == n_out:
        return names
    if label_names is not None:
        raise CheckpointError(f'{len(names)} label names given for a {n_out}-class model; expected one name '
                              f'per class in output order')
    if source.kind == 'release':
        raise CheckpointError(f'{source.name}: its config has {len(names)} label_names for a '
                              f'{n_out}-class model; expected one name per class in output order')
    try:
        return list(labels_for(n_out))
    except ValueError:
        raise CheckpointError(
            f'the model has {n_out} outputs and no label names: give them in output order '
            f'(--label-names a,b,c on the command line, label_names=[...] in Python)') from None


def check_finite(model, where: str) -> None:
    """CheckpointError when a weight or BN statistic is NaN or infinite: such a model's scores are not
    numbers, and the tools would print 'nan' as a probability or score nothing at all."""
    import torch
    bad = [name for name, t in (*model.named_parameters(), *model.named_buffers())
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f'{where}: {len(bad)} weight tensor(s) hold NaN or infinite values (e.g. {bad[0]}), '
                              f'so every output would be NaN; the file is damaged or came from a diverged training '
                              f'run. Use another checkpoint (an earlier epoch, or model_best)')
