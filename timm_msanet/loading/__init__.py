"""Build a model from a name, a checkpoint file or a Hub repo, for the tools (eval, predict, export, publish).

Checkpoints are read with `torch.load(weights_only=True)` only: timm train.py checkpoints
(`model_best.pth.tar`, with `state_dict`, optional `state_dict_ema`, `arch` and `args`), plain state dicts
and `.safetensors` files. train.py pickles its `args` as an `argparse.Namespace`; that one class is
allow-listed (it holds only data). Anything else that needs unpickling is refused and nothing in it runs.

EMA: `use_ema=None` (default) takes `state_dict_ema` when the checkpoint has one (train.py ranks its
checkpoints by the EMA model when EMA is on), `True` insists on it, `False` takes `state_dict`.

Architecture: train.py's `args.model` (copied to `arch`), else the one msanet architecture whose keys
and shapes fit the weights; an explicit `model_name` must agree with what the checkpoint records.
num_classes from `args.num_classes`, else the classifier's shape; in_chans from `args.in_chans`, else
`conv1.weight`. Of train.py's `args.model_kwargs` only the architecture's own constructor arguments are
used, each value checked (`allowed_model_args`); keys that name a weight source or loader option
(`STEERING_KEYS`: pretrained, pretrained_cfg_overlay, url, hf_hub_id, checkpoint_path, ...) are refused,
so a file can never decide where the loader connects; other keys are ignored with a warning.

Releases (`hf-hub:` / `local-dir:`): their config.json is read and checked (`check_release_config`) before
timm acts on it: a registered architecture, allow-listed model_args, no weight source in pretrained_cfg,
unique label names one per class, input sizes of MIN_SIDE..MAX_SIDE px, mean/std per channel. When the Hub
does not answer a HUB_PROBE_TIMEOUT_S connection test, loading runs in huggingface_hub's offline mode:
cached files load, missing ones fail at once instead of after half a minute of retries.

Class names: the model's `pretrained_cfg['label_names']`. A checkpoint of a 7- or 8-class model
trained on a `timm-msanet export` tree gets the package's canonical names (the sorted folder order
train.py used); other class counts need `label_names` given explicitly.
"""
# The public names of the four modules below, so that `from timm_msanet.loading import load_model` is the
# one import a tool or a user needs; the modules hold one concern each:
#   checks (what a file may say about its model) <- checkpoint (reading and writing weights files)
#   <- record (ExpressionModel: a loaded model and its facts) <- engine (Classifier: the one batching engine)
#   <- sources (names, releases, the Hub; load_model) <- arguments (the tools' shared model options)
from .checks import (CheckpointError, msanet_archs, MIN_SIDE, MAX_SIDE, MAX_CHANS, MAX_PARAMS, INTERPOLATIONS,
    CROP_MODES, MAX_NOTE_CHARS, STEERING_KEYS, COMMON_MODEL_ARGS, MSANET_MODEL_ARGS, allowed_model_args,
    checked_model_args, check_input_size, check_model_size, check_data_cfg, check_label_names, check_release_config,
    SOURCE_CFG_KEYS, checkpoint_cfg, activation_bytes, memory_budget, fit_batch)
from .checkpoint import (DEFAULT_MODEL, WEIGHT_KEYS, EMA_KEY, Checkpoint, RECORD_ARG_KEYS, training_record,
    write_weights, read_checkpoint, describe_mismatch, CONFIG_DATA_KEYS, WEIGHTS_BESIDE_CONFIG, config_beside,
    model_from_checkpoint)
from .record import ExpressionModel, WeightsSource
from .engine import Classifier, calibrated
from .sources import (create_published, needs_hub, HUB_PROBE_TIMEOUT_S, hub_reachable, load_model, load_expression_model,
    check_finite)
from .arguments import (add_model_args, model_input_paths, model_from_args)

__all__ = ['CheckpointError', 'msanet_archs', 'MIN_SIDE', 'MAX_SIDE', 'MAX_CHANS', 'MAX_PARAMS', 'INTERPOLATIONS',
    'CROP_MODES', 'MAX_NOTE_CHARS', 'STEERING_KEYS', 'COMMON_MODEL_ARGS', 'MSANET_MODEL_ARGS', 'allowed_model_args',
    'checked_model_args', 'check_input_size', 'check_model_size', 'check_data_cfg', 'check_label_names',
    'check_release_config', 'SOURCE_CFG_KEYS', 'checkpoint_cfg', 'activation_bytes', 'memory_budget', 'fit_batch',
    'DEFAULT_MODEL', 'WEIGHT_KEYS', 'EMA_KEY',
    'Checkpoint', 'RECORD_ARG_KEYS', 'training_record', 'write_weights', 'read_checkpoint', 'describe_mismatch',
    'CONFIG_DATA_KEYS', 'WEIGHTS_BESIDE_CONFIG', 'config_beside', 'model_from_checkpoint', 'create_published',
    'needs_hub', 'HUB_PROBE_TIMEOUT_S', 'hub_reachable', 'load_model', 'load_expression_model', 'check_finite',
    'ExpressionModel', 'WeightsSource', 'Classifier', 'calibrated', 'add_model_args', 'model_input_paths',
    'model_from_args']
