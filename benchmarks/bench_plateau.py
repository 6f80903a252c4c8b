"""When does a small TiTok leave the mean-image plateau? Steps until its output depends on its tokens.

A fresh TiTok first learns to output the mean training image and ignores its tokens; only later
(if at all) do the decoder's outputs start to depend on the encoder's tokens. This script trains
the reproduction's 64 px TiTok (width 128, depth 4, patch 8, K tokens) with a plain AdamW loop on a
fixed set of Imagenette training images and measures, every ``--every`` steps on held-out images:

* ``psnr``: reconstruction PSNR (pixels objective: the decoder's output; proxy objective: the
  teacher VQGAN decoding the predicted codes);
* ``token_sensitivity``: mean squared change of the decoder output when every image's tokens are
  swapped with another image's, over the mean squared difference of the images themselves
  (0: the output ignores the tokens);
* ``latent_spread``: variance across images of the l2-normalised latent tokens (summed over
  channels, mean over token positions; 0: every image gets the same tokens);
* ``codes``: distinct codes among all held-out tokens.

The plateau ends at the first measurement with ``token_sensitivity`` above 0.01.

Variations, each named in the result key: ``--decoder-embed-std``, ``--init-std`` (every weight),
``--no-quantizer``, ``--commitment``, ``--token-size``, ``--output-bias`` (output bias started at the training
marginal: mean colour, or code frequencies for proxy codes), ``--no-latent-bias`` (encoder output
bias held at zero), ``--lr``, ``--center-latents`` (``TiTokConfig.latent_centering``),
``--kmeans-init`` (codebook from spherical k-means of the first training images' latents),
``--ema-codebook`` (codebook moved by exponential moving averages of its latents instead of by
its loss), ``--embedding-lr-scale`` (learning rate of the latent tokens, mask and class tokens and
positional embeddings relative to the rest; ``--embedding-scope`` limits it to one side) and ``--constant`` (rate held after the warm-up).

``--teacher-entropy`` instead measures how much the proxy codes depend on what a fresh encoder
can see: the entropy (nats) of the teacher's code at a position, alone and given the image's
mean brightness (8 bins) or the patch's own mean brightness (4 or 16 bins).

Usage (each run prints JSON lines and appends a summary to the results file)::

    python benchmarks/bench_plateau.py --objective pixels --decoder-embed-std 0.02 --batch 32 --steps 800
    python benchmarks/bench_plateau.py --objective proxy --teacher runs/imagenette64-default/vqgan-f8/export

Results: ``benchmarks/results/plateau.json`` (one entry per configuration, newest wins).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from titok.data import DataConfig, build_dataset
from titok.models.presets import tokenizer_config
from titok.models.titok import TiTok
from titok.training.optim import EMBEDDING_NAMES, lr_factor

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "imagenette"
RESULTS = ROOT / "benchmarks" / "results" / "plateau.json"


def load_images(n_train: int, n_val: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First ``n_train`` training and first ``n_val`` held-out images (500 held out, seed 0), 64 px."""
    out = []
    for split, n in (("train", n_train), ("val", n_val)):
        cfg = DataConfig(
            path=str(DATA),
            image_size=64,
            endless=False,
            augment=False,
            holdout=500,
            split=split,
            max_samples=None,
        )
        images = []
        for sample in build_dataset(cfg):
            images.append(sample["image"])
            if len(images) == n:
                break
        out.append(torch.stack(images))
    return out[0], out[1]


def _entropy(codes: torch.Tensor) -> float:
    counts = codes.unique(return_counts=True)[1].float()
    p = counts / counts.sum()
    return float(-(p * p.log()).sum())


def _conditional_entropy(codes: torch.Tensor, bins: torch.Tensor) -> float:
    """Mean over positions of H(code | position, bin): codes and bins (N, P)."""
    n, positions = codes.shape
    total = 0.0
    for j in range(positions):
        for value in bins[:, j].unique():
            chosen = codes[bins[:, j] == value, j]
            total += len(chosen) / n * _entropy(chosen)
    return total / positions


def teacher_entropy(images: torch.Tensor, teacher_path: str) -> dict[str, float]:
    """Entropies of the teacher's codes (see the module docstring), on ``images`` (N, 3, S, S)."""
    from titok.loading import load_vqgan

    teacher = load_vqgan(teacher_path).eval()
    with torch.no_grad():
        codes = torch.cat([teacher.encode(chunk) for chunk in images.split(256)])
    n, g = codes.shape[0], codes.shape[1]
    flat = codes.reshape(n, -1)
    f = images.shape[-1] // g
    patch_mean = images.reshape(n, 3, g, f, g, f).mean((1, 3, 5)).reshape(n, -1)
    image_mean = images.mean((1, 2, 3))[:, None].expand_as(patch_mean)
    out = {
        "codes_used": float(codes.unique().numel()),
        "H(code|position)": _conditional_entropy(flat, torch.zeros_like(flat)),
        "H(code|position,image brightness/8)": _conditional_entropy(
            flat, (image_mean * 8).long().clamp(max=7)
        ),
    }
    for bins in (4, 16):
        key = f"H(code|position,patch brightness/{bins})"
        out[key] = _conditional_entropy(flat, (patch_mean * bins).long().clamp(max=bins - 1))
    return out


def build(args: argparse.Namespace, proxy: bool) -> TiTok:
    cfg = tokenizer_config(
        "titok-tiny-64",
        num_latent_tokens=args.tokens,
        encoder_width=128,
        decoder_width=128,
        encoder_depth=4,
        decoder_depth=4,
        encoder_heads=4,
        decoder_heads=4,
        codebook_size=1024,
        decoder_head="proxy" if proxy else "pixels",
        decoder_embed_init_std=args.decoder_embed_std,
        init_std=args.init_std,
        commitment_cost=args.commitment,
        token_size=args.token_size,
        latent_centering=args.center_latents,
        dead_code_threshold=args.dead_code_threshold,
    )
    return TiTok(cfg)


@torch.no_grad()
def kmeans_init(model: TiTok, images: torch.Tensor, iterations: int = 20) -> None:
    """Set the codebook to spherical k-means centres of the latents of ``images`` (N, 3, S, S).

    The latents are taken as the quantizer matches them (centred over these images if the model
    centres, then l2-normalised); empty clusters keep a random latent. Marks every code as used so
    that dead-code restarts do not overwrite the result at the first step.
    """
    z = torch.cat([model.encode_latents(chunk) for chunk in images.split(512)])
    points = F.normalize(z.reshape(-1, z.shape[-1]).float(), dim=-1)
    codebook = model.quantize.embedding.weight
    k = codebook.shape[0]
    gen = torch.Generator().manual_seed(0)
    centres = points[torch.randperm(len(points), generator=gen)[:k]].clone()
    for _ in range(iterations):
        assign = (points @ centres.t()).argmax(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k)
        filled = counts > 0
        centres[filled] = F.normalize(sums[filled], dim=-1)
    codebook.copy_(centres)
    if model.quantize.restart is not None:
        model.quantize.restart.usage.fill_(1.0)


class EMACodebook:
    """Codebook updates by exponential moving averages (van den Oord et al. 2017, appendix).

    Each code becomes the running mean of the (matched, l2-normalised) latents assigned to it:
    ``N_k <- d N_k + (1 - d) n_k``, ``m_k <- d m_k + (1 - d) sum z``, ``e_k = m_k / N_k``. The
    codebook leaves the optimiser (no codebook loss; the commitment loss stays). Codes rewritten by
    a dead-code restart restart their averages from the new code.
    """

    def __init__(self, model: TiTok, decay: float) -> None:
        self.model, self.decay = model, decay
        weight = model.quantize.embedding.weight
        weight.requires_grad_(False)
        self.count = torch.ones(weight.shape[0])
        self.sum = weight.detach().float().clone()

    @torch.no_grad()
    def update(self, z: torch.Tensor, indices: torch.Tensor, before: torch.Tensor) -> None:
        """Fold a batch's latents (B, N, C) and codes (B, N) in; ``before``: codebook before it."""
        weight = self.model.quantize.embedding.weight
        restarted = (weight != before).any(1)
        self.sum[restarted] = weight[restarted].float()
        self.count[restarted] = 1.0
        matched = F.normalize(z.detach().float(), dim=-1).reshape(-1, z.shape[-1])
        flat = indices.flatten()
        counts = torch.bincount(flat, minlength=len(self.count)).float()
        sums = torch.zeros_like(self.sum).index_add_(0, flat, matched)
        self.count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        weight.copy_(self.sum / self.count.clamp(min=1e-5)[:, None])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objective", choices=("pixels", "proxy"), default="pixels")
    parser.add_argument(
        "--teacher", default=str(ROOT / "runs" / "imagenette64-default" / "vqgan-f8" / "export")
    )
    parser.add_argument("--decoder-embed-std", type=float, default=0.02, help="0.02: the authors' init")
    parser.add_argument(
        "--init-std", type=float, default=0.02, help="std of every linear/conv weight; 0.02: the authors'"
    )
    parser.add_argument(
        "--output-bias", action="store_true", help="start the output bias at the training marginal"
    )
    parser.add_argument(
        "--no-latent-bias", action="store_true", help="hold the encoder's output bias at zero"
    )
    parser.add_argument(
        "--center-latents", action="store_true", help="model.latent_centering: subtract the mean latent"
    )
    parser.add_argument(
        "--dead-code-threshold",
        type=float,
        default=0.0,
        help="model.dead_code_threshold: restart codes whose running usage falls below it (0: off)",
    )
    parser.add_argument("--commitment", type=float, default=0.25, help="VQ commitment cost (beta)")
    parser.add_argument("--token-size", type=int, default=12, help="code dimension (12: the recipe's)")
    parser.add_argument(
        "--no-quantizer", action="store_true", help="decode the l2-normalised latents directly"
    )
    parser.add_argument(
        "--kmeans-init",
        type=int,
        default=0,
        help="initialise the codebook by spherical k-means on this many training images' latents (0: off)",
    )
    parser.add_argument(
        "--ema-codebook",
        type=float,
        default=0.0,
        help="update the codebook by EMA of its assigned latents with this decay, not by its loss (0: off)",
    )
    parser.add_argument(
        "--embedding-lr-scale",
        type=float,
        default=1.0,
        help="learning-rate factor of the latent/mask/class tokens and positional embeddings",
    )
    parser.add_argument(
        "--embedding-scope",
        choices=("all", "encoder", "decoder"),
        default="all",
        help="which side's tokens and embeddings --embedding-lr-scale applies to (the latent tokens count as the encoder's)",
    )
    parser.add_argument("--constant", action="store_true", help="hold the rate after the warm-up")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--train-images", type=int, default=4096)
    parser.add_argument("--val-images", type=int, default=256)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--teacher-entropy", action="store_true", help="measure the proxy codes' entropies")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON file the summary is added to")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    train, val = load_images(args.train_images, args.val_images)
    if args.teacher_entropy:
        figures = teacher_entropy(train, args.teacher)
        print(json.dumps(figures, indent=2))
        results = json.loads(args.results.read_text()) if args.results.is_file() else {}
        results[f"teacher-entropy-{Path(args.teacher).parent.name}"] = {
            "teacher": args.teacher,
            "images": len(train),
            **figures,
        }
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(results, indent=2) + "\n")
        return
    proxy = args.objective == "proxy"
    model = build(args, proxy)
    teacher = None
    if proxy:
        from titok.loading import load_vqgan

        teacher = load_vqgan(args.teacher).eval()
        with torch.no_grad():
            train_codes = torch.cat([teacher.encode(chunk) for chunk in train.split(256)])
            val_codes = teacher.encode(val)

    if args.output_bias:
        with torch.no_grad():
            if proxy:
                counts = torch.bincount(train_codes.flatten(), minlength=1024).float() + 1.0
                model.decoder.ffn[-1].bias.copy_((counts / counts.sum()).log())
            else:
                model.decoder.conv_out.bias.copy_(train.mean((0, 2, 3)))

    if args.no_latent_bias:
        model.encoder.conv_out.bias.requires_grad_(False)
    if args.kmeans_init:
        kmeans_init(model, train[: args.kmeans_init])
    ema = EMACodebook(model, args.ema_codebook) if args.ema_codebook else None

    def scaled(name: str) -> bool:
        side = "decoder" if name.startswith("decoder.") else "encoder"
        return name.endswith(EMBEDDING_NAMES) and args.embedding_scope in ("all", side)

    embeddings = [p for n, p in model.named_parameters() if p.requires_grad and scaled(n)]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not scaled(n)]
    groups = [{"params": rest}, {"params": embeddings, "lr": args.lr * args.embedding_lr_scale}]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.99), weight_decay=1e-4)

    schedule = "constant" if args.constant else "cosine"
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s + 1, args.warmup, args.steps, args.lr, 0.0, schedule)
    )

    def forward(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Decoder output, quantizer loss, code ids (None without quantizer), latents."""
        z = model.encode_latents(images)
        if args.no_quantizer:
            return model.decode_latents(F.normalize(z, dim=-1)), z.new_zeros(()), None, z
        if ema is not None and model.training:
            before = model.quantize.embedding.weight.detach().clone()
            q = model.quantize(z)
            ema.update(z, q.indices, before)
            return model.decode_latents(q.quantized), q.commitment_loss, q.indices, z
        q = model.quantize(z)
        return model.decode_latents(q.quantized), q.loss, q.indices, z

    @torch.no_grad()
    def measure() -> dict[str, float | None]:
        model.eval()
        out, _, ids, z = forward(val)
        latents = F.normalize(z, dim=-1)
        tokens = latents if ids is None else model.quantize.lookup(ids)
        perm = torch.randperm(len(val), generator=torch.Generator().manual_seed(1))
        swapped = model.decode_latents(tokens[perm])
        if proxy:
            assert teacher is not None
            pixels = teacher.decode(out.argmax(1))
            change = (teacher.decode(swapped.argmax(1)) - pixels).pow(2).mean()
            accuracy = float((out.argmax(1) == val_codes).float().mean())
        else:
            pixels = out.clamp(0, 1)
            change = (swapped.clamp(0, 1) - pixels).pow(2).mean()
            accuracy = None
        model.train()
        mse = float(F.mse_loss(pixels, val))
        return {
            "psnr": -10 * math.log10(mse),
            "token_sensitivity": float(change / (val - val[perm]).pow(2).mean()),
            "latent_spread": float(latents.var(0).sum(-1).mean()),
            "codes": float(-1 if ids is None else ids.unique().numel()),
            "perplexity": None if ids is None else math.exp(_entropy(ids.flatten())),
            "code_accuracy": accuracy,
        }

    rng = torch.Generator().manual_seed(args.seed)
    history, escape = [], None
    start = time.perf_counter()
    for step in range(args.steps + 1):
        if step % args.every == 0 or step == args.steps:
            row = {"step": step, **measure(), "seconds": time.perf_counter() - start}
            history.append(row)
            print(
                json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}),
                flush=True,
            )
            if escape is None and row["token_sensitivity"] > 0.01:
                escape = step
        if step == args.steps:
            break
        index = torch.randint(0, len(train), (args.batch,), generator=rng)
        out, q_loss, _, _ = forward(train[index])
        target_loss = F.cross_entropy(out, train_codes[index]) if proxy else F.mse_loss(out, train[index])
        opt.zero_grad(set_to_none=True)
        (target_loss + q_loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()

    name = (
        f"{args.objective}-k{args.tokens}-b{args.batch}-std{args.decoder_embed_std}"
        f"{'' if args.init_std == 0.02 else f'-init{args.init_std}'}"
        f"{'' if args.commitment == 0.25 else f'-beta{args.commitment}'}"
        f"{'' if args.token_size == 12 else f'-dim{args.token_size}'}"
        f"{'-outbias' if args.output_bias else ''}"
        f"{'-nolatentbias' if args.no_latent_bias else ''}"
        f"{'' if args.lr == 1e-3 else f'-lr{args.lr:g}'}"
        f"{'-centered' if args.center_latents else ''}"
        f"{'' if args.warmup == 20 else f'-warmup{args.warmup}'}"
        f"{f'-restart{args.dead_code_threshold:g}' if args.dead_code_threshold else ''}"
        f"{f'-kmeans{args.kmeans_init}' if args.kmeans_init else ''}"
        f"{f'-ema{args.ema_codebook:g}' if args.ema_codebook else ''}"
        f"{'' if args.embedding_lr_scale == 1.0 else f'-emblr{args.embedding_lr_scale:g}'}"
        f"{'' if args.embedding_scope == 'all' else f'-{args.embedding_scope}'}"
        f"{'-constant' if args.constant else ''}"
        f"{'-noquant' if args.no_quantizer else ''}-seed{args.seed}-train{args.train_images}-steps{args.steps}"
    )
    summary = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "plateau_left_at_step": escape,
        "images_seen_at_exit": None if escape is None else escape * args.batch,
        "final": history[-1],
        "history": history,
        "torch": torch.__version__,
        "threads": args.threads,
    }
    print(f"{name}: plateau left at step {escape} (of {args.steps}); final PSNR {history[-1]['psnr']:.2f} dB")
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    results[name] = summary
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
