"""The one batching engine: preprocessed tensors in, logits or calibrated probabilities out.

Every tool that runs a model goes through a `Classifier` made from an `ExpressionModel` (`record.engine(...)`):
predict and video (`Batcher`: groups of crops, one group per image or frame, results in input order), eval and
calibrate (`logits` of a DataLoader's batches), explain (`run` with its own forward) and export-onnx's check.
Device placement, dtype, autocast, eval mode and `torch.inference_mode` are handled here once; the batch size
is shrunk here once to what the memory budget holds (`checks.fit_batch`), before anything is allocated.
"""
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple

from .checks import fit_batch


class Classifier:
    """Batched inference on one `ExpressionModel`.

    device: torch device; batch_size: images (or crops) per forward, shrunk to the memory budget; img_size:
    the input resolution (default the cfg's); amp: bf16 autocast on CPU, float16 on CUDA.
    """

    def __init__(self, record, device='cpu', batch_size: int = 32, img_size: Optional[int] = None,
                 amp: bool = False):
        import torch
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        self.record = record
        self.transform, self.data_config = record.transform(img_size)
        self.batch_size = fit_batch(record.module, self.data_config['input_size'], batch_size,
                                    per_image=record.activation_bytes(self.data_config['input_size']))
        self.device = torch.device(device) if device is not None else torch.device('cpu')
        record.module.to(self.device)
        param = next(record.module.parameters(), None)
        self.dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        self.amp = amp
        self.seconds = 0.0  # time spent in the model's forward (video's timing line reports it)

    def run(self, x, forward: Optional[Callable[[Any, Any], Any]] = None):
        """`forward(module, x)` (default `module(x)`) on a batch, on the engine's device and dtype, in eval
        mode (the module's mode is restored after) and inference mode, under autocast when `amp`."""
        import torch
        module = self.record.module
        was_training = module.training
        autocast = torch.autocast(self.device.type, enabled=self.amp,
                                  dtype=torch.bfloat16 if self.device.type == 'cpu' else torch.float16)
        module.eval()
        try:
            with torch.inference_mode(), autocast:
                x = x.to(self.device, self.dtype)
                return forward(module, x) if forward is not None else module(x)
        finally:
            module.train(was_training)

    def logits(self, x):
        """float32 logits on the CPU of a batch tensor (N x C x H x W, already preprocessed)."""
        start = time.perf_counter()
        out = self.run(x).float().cpu()
        self.seconds += time.perf_counter() - start
        return out

    def probabilities(self, x):
        """softmax(logits / T) with the record's calibration temperature, float32 on the CPU."""
        return calibrated(self.logits(x), self.record.temperature)

    def classify(self, images) -> List[List[float]]:
        """Calibrated probabilities of PIL images (a list), `batch_size` at a time."""
        import torch
        out: List[List[float]] = []
        for i in range(0, len(images), self.batch_size):
            x = torch.stack([self.transform(img) for img in images[i:i + self.batch_size]])
            out += self.probabilities(x).tolist()
        return out

    def batcher(self) -> 'Batcher':
        """A `Batcher` on this engine: groups of tensors in, their probabilities out in input order."""
        return Batcher(self)


class Batcher:
    """Groups of preprocessed tensors (one group per image or video frame: its face crops, or the image itself)
    in, `(key, probabilities of each tensor)` out, in input order.

    `add` queues a group and returns the groups that are complete; tensors of consecutive groups share batches of
    the engine's `batch_size`, and a group comes out as soon as its last tensor has run, so only preprocessed
    tensors wait, never decoded images (a folder of large photos or a video streams through in constant memory).
    A group without tensors (a failed image, a frame with no face) comes out in its turn with an empty list.
    `finish` runs what is left. The caller drives the loop: nothing here calls back into the tools."""

    def __init__(self, engine: Classifier):
        self.engine = engine
        self.pending: List[List[Any]] = []           # [key, probabilities so far, tensors still queued]
        self.queue: List[Tuple[Any, List[Any]]] = []  # (tensor, its group's pending entry)

    def add(self, key: Any, tensors: Sequence[Any]) -> List[Tuple[Any, List[List[float]]]]:
        entry = [key, [], len(tensors)]
        self.pending.append(entry)
        self.queue.extend((t, entry) for t in tensors)
        while len(self.queue) >= self.engine.batch_size:
            self._run_batch()
        return self._ready()

    def finish(self) -> List[Tuple[Any, List[List[float]]]]:
        while self.queue:
            self._run_batch()
        return self._ready()

    def _run_batch(self) -> None:
        import torch
        n = self.engine.batch_size
        batch, self.queue = self.queue[:n], self.queue[n:]
        for (_, entry), p in zip(batch, self.engine.probabilities(torch.stack([t for t, _ in batch])).tolist()):
            entry[1].append(p)
            entry[2] -= 1

    def _ready(self) -> List[Tuple[Any, List[List[float]]]]:
        out = []
        while self.pending and self.pending[0][2] == 0:
            key, probs, _ = self.pending.pop(0)
            out.append((key, probs))
        return out


def calibrated(logits, temperature: float = 1.0):
    """softmax(logits / T) in float32."""
    return (logits.float() / temperature).softmax(-1)
