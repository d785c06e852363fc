"""JPEG decoding on the GPU for the indexing workers, in batches.

On a GPU machine the networks outrun the CPU workers, and on photo
collections the workers' largest cost is the JPEG's entropy decoding, which
draft mode cannot shrink (a 12 MP photo: 17 ms at a quarter of its size, 29 ms
whole, on one core).  nvJPEG decodes a list of files in one call several
times faster than one at a time, so the workers hand their JPEG bytes to one
thread that decodes whatever has queued up meanwhile as one batch, shrinks
each picture on the GPU to the analysis size and hands back only that.

Anything nvJPEG cannot take (CMYK, a broken or unusual file, an enormous
picture that would crowd the card) is answered None and the worker decodes it
on the CPU.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import threading
import warnings
from concurrent.futures import Future

import numpy as np

log = logging.getLogger(__name__)

# Pictures above this stay on the CPU: draft mode decodes them at reduced size in
# bounded memory, where the GPU would hold every full-size picture of a batch at once.
GPU_MAX_PIXELS = 64_000_000
# At most this many files per nvJPEG call (one per worker thread is the most that
# can be waiting; more would only hold decoded pictures on the card longer).
BATCH_LIMIT = 32
_STOP = object()


class GpuJpegDecoder:
    """Decodes JPEG bytes on `device` and returns the picture shrunk to fit `side`.

    Thread-safe: any number of worker threads call `picture()`; one thread of
    its own talks to the GPU.  Use as a context manager, or call close()."""

    def __init__(self, device: str, side: int) -> None:
        import torch

        self.device = torch.device(device)
        self.side = side
        self._requests: queue.Queue = queue.Queue()
        self._broken = False  # the GPU side failed: every picture is answered None (the CPU decodes)
        self._thread = threading.Thread(target=self._serve, name="gpu-jpeg", daemon=True)
        self._thread.start()

    def picture(self, data: bytes, width: int, height: int) -> np.ndarray | None:
        """The RGB picture (H x W x 3 uint8) no larger than `side`, or None: decode on the CPU."""
        if width * height > GPU_MAX_PIXELS or self._broken:
            return None
        answer: Future = Future()
        self._requests.put((data, answer))
        return answer.result()

    def close(self) -> None:
        if self._thread.is_alive():
            self._requests.put(_STOP)
            self._thread.join()

    def __enter__(self) -> GpuJpegDecoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _serve(self) -> None:
        import torch

        try:
            # A stream of this thread's own: the decoder's output memory is then never a
            # block the networks' kernels, queued on the default stream, are still reading.
            on_gpu = self.device.type == "cuda"
            with torch.cuda.stream(torch.cuda.Stream(self.device)) if on_gpu else contextlib.nullcontext():
                self._serve_batches(self._answer)
        except Exception:
            log.exception("JPEG decoding on %s failed; the CPU decodes instead", self.device)
            self._broken = True
            self._serve_batches(lambda batch: [answer.set_result(None) for _, answer in batch])

    def _serve_batches(self, answer) -> None:
        """Hand `answer` whatever has queued up, batch after batch, until close()."""
        while True:
            batch = [self._requests.get()]
            while len(batch) < BATCH_LIMIT:
                try:
                    batch.append(self._requests.get_nowait())
                except queue.Empty:
                    break
            stopping = any(item is _STOP for item in batch)
            batch = [item for item in batch if item is not _STOP]
            if batch:
                answer(batch)
            if stopping:
                return

    def _answer(self, batch: list[tuple[bytes, Future]]) -> None:
        try:
            pictures = self._decode([data for data, _ in batch])
        except Exception as exc:  # one file nvJPEG refuses fails the whole call: try each alone
            log.debug("nvJPEG refused a batch of %d (%s); decoding one by one", len(batch), exc)
            pictures = [self._decode_or_none(data) for data, _ in batch]
        for (_, answer), picture in zip(batch, pictures):
            answer.set_result(picture)

    def _decode_or_none(self, data: bytes) -> np.ndarray | None:
        try:
            return self._decode([data])[0]
        except Exception:
            return None

    def _decode(self, files: list[bytes]) -> list[np.ndarray]:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in files]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's notice that its decoders move to TorchCodec
            decoded = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=self.device)
        return [shrink_on_device(picture, self.side) for picture in decoded]


def shrink_on_device(picture, side: int) -> np.ndarray:
    """A C x H x W uint8 picture shrunk (antialiased) to fit `side`, as H x W x 3 on the host."""
    import torch
    import torch.nn.functional as F

    height, width = picture.shape[1:]
    scale = min(1.0, side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        picture = F.interpolate(picture[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)
        picture = picture[0].round_().clamp_(0, 255).to(torch.uint8)
    return picture.permute(1, 2, 0).contiguous().cpu().numpy()
