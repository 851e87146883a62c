"""The pieces of ``benchmarks/gpu_train.py``: a whisper-sized model of random weights, a processor of the right
shape, a synthetic store with FeatureStore's training interface, and the two contestants (sttrl's training block and
a bare PyTorch loop) measured the same way.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

SMALL = {"d_model": 768, "layers": 12, "heads": 12, "ffn": 3072, "window": 30}
QUICK = {"d_model": 64, "layers": 2, "heads": 2, "ffn": 128, "window": 4}
VOCAB = 51865
TEXT_VOCAB = 50257  # ids below <|endoftext|> are text tokens
# Multilingual Whisper specials: <|endoftext|>, <|startoftranscript|>, <|sw|>, <|transcribe|>, <|notimestamps|>
EOT, SOT, SW, TRANSCRIBE, NO_TIMESTAMPS = 50257, 50258, 50318, 50359, 50363


# ----- model, processor, synthetic data ----------------------------------------------------------
def build_model(sizes: dict[str, int], device: Any, seed: int) -> Any:
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=VOCAB,
        num_mel_bins=80,
        d_model=sizes["d_model"],
        encoder_layers=sizes["layers"],
        decoder_layers=sizes["layers"],
        encoder_attention_heads=sizes["heads"],
        decoder_attention_heads=sizes["heads"],
        encoder_ffn_dim=sizes["ffn"],
        decoder_ffn_dim=sizes["ffn"],
        max_source_positions=sizes["window"] * 50,
        max_target_positions=448,
        pad_token_id=EOT,
        bos_token_id=EOT,
        eos_token_id=EOT,
        decoder_start_token_id=SOT,
        dropout=0.0,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).to(device)
    return model


def build_processor(args: Any, window: int) -> tuple[Any, list[int], str]:
    """A processor of the right shape when a multilingual tokenizer is at hand; else (None, constant prefix)."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    directory = args.tokenizer_dir
    if directory is None:
        try:
            from sttrl.config import DataConfig
            from sttrl.train.pretrained import pretrained_dir

            cand = Path(pretrained_dir("whisper-base", DataConfig().cache_dir))
            if not cand.is_absolute():
                cand = common.REPO / cand
            directory = cand if (cand / "tokenizer.json").is_file() else None
        except Exception:  # noqa: BLE001 - optional; the constant prefix is the same ids
            directory = None
    prefix = [SOT, SW, TRANSCRIBE, NO_TIMESTAMPS]
    if directory is None:
        return None, prefix, "none (constant multilingual prefix ids)"
    tok = WhisperTokenizer.from_pretrained(directory)
    tok.set_prefix_tokens(language="sw", task="transcribe", predict_timestamps=False)
    fe = WhisperFeatureExtractor(feature_size=80, chunk_length=window)
    processor = WhisperProcessor(feature_extractor=fe, tokenizer=tok)
    got = list(tok.prefix_tokens)
    if len(tok) != VOCAB or got != prefix:
        print(f"  note: tokenizer {directory} has {len(tok)} ids, prefix {got} (expected {VOCAB}, {prefix})")
    return processor, got, str(directory)


class SyntheticStore:
    """FeatureStore's training interface (``len``, ``batch(indices)``) over random log-mels and label ids."""

    def __init__(self, n: int, frames: int, label_len: int, prefix: list[int], seed: int) -> None:
        import torch

        g = torch.Generator().manual_seed(seed)
        self.features = torch.randn(n, 80, frames, generator=g)
        self.text = torch.randint(0, TEXT_VOCAB, (n, label_len), generator=g)
        self.prefix = torch.tensor(prefix)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def batch(self, indices: list[int]) -> Any:
        import torch

        from sttrl.train.features import Batch

        idx = torch.tensor(indices)
        text = self.text[idx]
        b = len(indices)
        dec = torch.cat([self.prefix.expand(b, -1), text], dim=1)
        masked = torch.full((b, len(self.prefix) - 1), -100, dtype=torch.long)
        lab = torch.cat([masked, text, torch.full((b, 1), EOT, dtype=torch.long)], dim=1)
        return Batch.of(self.features[idx], dec, lab)


# ----- contestants -------------------------------------------------------------------------------
def gpu_mem(device: Any) -> float:
    import torch

    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def resident(device: Any) -> float:
    """GPU bytes allocated by tensors (CUDA) or the process's resident set (CPU)."""
    import psutil

    return gpu_mem(device) if device.type == "cuda" else psutil.Process().memory_info().rss


def make_bare(model: Any, store: Any, index_fn: Any, lr: float, device: Any, autocast: bool, foreach: bool | None):
    import torch

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, foreach=foreach
    )
    cursor = {"pos": 0}

    def block(batch: int, k_steps: int) -> dict[str, Any]:
        model.train()
        cuda = device.type == "cuda"
        common.sync(device)
        base = gpu_mem(device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            marks = [torch.cuda.Event(enable_timing=True) for _ in range(k_steps + 1)]
        t_cpu = [time.perf_counter()]
        t0 = time.perf_counter()
        if cuda:
            marks[0].record()
        for k in range(k_steps):
            idx = index_fn(cursor["pos"], batch)
            cursor["pos"] += batch
            common.bare_step(model, opt, store.batch(idx).to(device), device, autocast, 1.0)
            if cuda:
                marks[k + 1].record()
            else:
                t_cpu.append(time.perf_counter())
        common.sync(device)
        wall = time.perf_counter() - t0
        if cuda:
            steps = [marks[i].elapsed_time(marks[i + 1]) / 1000 for i in range(k_steps)]
            peak = torch.cuda.max_memory_allocated(device)
        else:
            steps = [t_cpu[i + 1] - t_cpu[i] for i in range(k_steps)]
            peak = base
        step = statistics.median(steps)
        return {
            "wall_s": wall,
            "samples_per_s_block": batch * k_steps / wall,
            "step_s": step,
            "samples_per_s_step": batch / step,
            "peak_delta_gb": common.gb(peak - base),
            "peak_gb": common.gb(peak),
        }

    return block


def make_sttrl(trainer: Any, lr: float, device: Any, rollback: Any):
    import torch

    from sttrl.train.blocks import Hyperparams

    def block(batch: int, k_steps: int) -> dict[str, Any]:
        hp = Hyperparams(lr, batch, 1, 0)
        infos: list[Any] = []
        common.sync(device)
        base = gpu_mem(device)
        wall, res = common.timed(
            lambda: trainer.train_block(hp, k_steps, on_step=infos.append, rollback=rollback), device
        )
        steps = [batch / i.samples_per_s for i in infos]
        step = statistics.median(steps) if steps else float("nan")
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else base
        return {
            "wall_s": wall,
            "samples_per_s_block": res.samples / wall,
            "loop_s": res.seconds,
            "overhead_s": wall - res.seconds,
            "step_s": step,
            "samples_per_s_step": batch / step,
            "peak_delta_gb": common.gb(peak - base),
            "peak_gb": common.gb(peak),
            "status": res.status,
        }

    return block
