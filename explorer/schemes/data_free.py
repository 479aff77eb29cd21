"""Data-free KD: the student never learns from a real training image, only from images made
from the frozen teacher. Real val/test images are used for evaluation only.

The trainer's loop still walks the training split to count steps (steps/epoch = the real
training set's), but these schemes ignore batch.x / batch.y: each step makes a batch of the same
size from the generator (DAFL) or the synthesised pool (DeepInversion), and replace batch.y by
the teacher's labels of those images, so the run's `train/acc` is the student's agreement with
the teacher on synthetic data. The synthesised images are saved with the run (`synth.pt`:
uint8 images, teacher labels and class names; `synth.png`: a grid) -- `load_synthesised(run)`.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data import augment_batch
from ..kd.base import Batch, HParam, Paper
from ..kd.functional import kd_loss
from ..models.outputs import TapSpecs, forward_outputs
from .base import RunContext, Scheme, register_scheme
from .common import KeepsFrozen, freeze


class _DataFree(KeepsFrozen, Scheme):
    category = "algorithm"
    needs_teacher = True
    frozen = ("teacher",)
    n_saved = 64

    def __init__(self, ctx: RunContext, **hp):
        super().__init__(ctx, **hp)
        self.student = ctx.student
        self.teacher = freeze(ctx.teacher)

    def eval_models(self):
        return {"student": self.student}

    def distill_on(self, x: torch.Tensor, batch: Batch):
        """KD of the student on synthetic images x; batch.y becomes the teacher's labels."""
        with torch.no_grad():
            t = self.teacher(x)
        z = self.student(x)
        batch.y = t.argmax(1)
        return z, kd_loss(z, t, self.hp["temperature"])

    def sample_images(self, n: int) -> torch.Tensor:
        raise NotImplementedError

    def save_artifacts(self, run_dir, store, run_id) -> None:
        with torch.no_grad():
            x = self.sample_images(self.n_saved)
            labels = self.teacher(x).argmax(1).cpu()
        data = self.ctx.dataset
        images = (data.denormalize(x.float()) * 255).round().to(torch.uint8).cpu()
        path = Path(run_dir) / "synth.pt"
        torch.save({"images": images, "labels": labels, "classes": list(map(str, data.classes))}, path)
        store.add_artifact(run_id, "synth", path, "synthesised")
        png = Path(run_dir) / "synth.png"
        save_grid(images, png)
        store.add_artifact(run_id, "synth_png", png, "image")


def save_grid(images: torch.Tensor, path: Path, cols: int = 8, scale: int = 4) -> None:
    """uint8 (N, C, H, W) -> one PNG grid, each image scaled up `scale` times (nearest)."""
    from PIL import Image
    n, c, h, w = images.shape
    rows = math.ceil(n / cols)
    grid = torch.zeros(3, rows * (h + 1), cols * (w + 1), dtype=torch.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        grid[:, r * (h + 1):r * (h + 1) + h, k * (w + 1):k * (w + 1) + w] = img.expand(3, h, w) if c == 1 else img[:3]
    grid = grid.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)


def load_synthesised(run, store=None) -> dict:
    """A data-free run's synthesised images: {"images": uint8 (N, C, H, W), "labels": teacher's
    labels (N,), "classes": [str], "png": path of the grid}. `run` is a run id or a run dict."""
    from ..store import Store
    store = store or Store()
    run_id = run["id"] if isinstance(run, dict) else run
    arts = store.artifacts(run_id)
    if "synth" not in arts:
        raise FileNotFoundError(f"run {run_id} has no synthesised images: only completed dafl / deepinversion "
                                "runs save them")
    out = torch.load(arts["synth"], map_location="cpu", weights_only=True)
    out["png"] = arts.get("synth_png")
    return out


# ----------------------------------------------------------------------------- DAFL

class Generator(nn.Module):
    """DAFL's generator: noise -> linear -> (upsample, conv, BN, LeakyReLU) x2 -> conv -> tanh -> BN
    (no affine), so its images come out roughly normalised, like the teacher's inputs."""

    def __init__(self, latent: int, channels: int, size: int):
        super().__init__()
        if size % 4:
            raise ValueError(f"scheme 'dafl': the generator makes images whose side is a multiple of 4; this "
                             f"dataset's images are {size} px")
        self.s0 = size // 4
        self.fc = nn.Linear(latent, 128 * self.s0 ** 2)
        self.net = nn.Sequential(
            nn.BatchNorm2d(128), nn.Upsample(scale_factor=2),
            nn.Conv2d(128, 128, 3, 1, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.2), nn.Upsample(scale_factor=2),
            nn.Conv2d(128, 64, 3, 1, 1), nn.BatchNorm2d(64), nn.LeakyReLU(0.2),
            nn.Conv2d(64, channels, 3, 1, 1), nn.Tanh(), nn.BatchNorm2d(channels, affine=False))

    def forward(self, z):
        return self.net(self.fc(z).view(len(z), 128, self.s0, self.s0))


@register_scheme
class DAFL(_DataFree):
    """Each step: the generator makes a batch; its loss (one-hot + activation + information
    entropy, all through the frozen teacher, so it reaches only the generator) is stepped at once
    by the generator's own Adam optimiser, as in the paper (with the run's SGD instead, the student
    reached 21% vs 49% test accuracy: digits, 300 images, 30 epochs, one seed); the returned g_* terms
    are detached, for the log only. The student's KD on the *detached* images is returned for the
    run's optimiser, so it reaches only the student. The Adam state is in the checkpoint.
    As the official code (huawei-noah, Data-Efficient-Model-Compression/DAFL/DAFL-train.py): the
    information-entropy term uses log base 10 (`torch.log10`), and the student's `kdloss` is KL at T = 1,
    summed over classes and averaged over the batch, without T^2 (our default temperature 1; a larger T
    gets Hinton's T^2)."""
    key = "dafl"
    name = "Data-Free Learning (DAFL)"
    paper = Paper("Hanting Chen, Yunhe Wang, Chang Xu, Zhaohui Yang, Chuanjian Liu, Boxin Shi, Chunjing Xu, "
                  "Chao Xu, Qi Tian", "Data-Free Learning of Student Networks", 2019, "ICCV", "1904.01186")
    equation = (r"\mathcal{L}_G = \mathrm{CE}(z_t, \arg\max z_t) - \alpha\,\|f_t\|_1 - \beta\,"
                r"H_{10}\big(\tfrac1n\textstyle\sum_i \sigma(z_t^i)\big),\ H_{10}(p) = -\sum_c p_c \log_{10} p_c,\quad "
                r"\mathcal{L}_S = T^2\,\mathrm{KL}\big(\sigma(z_t/T)\,\|\,\sigma(z_s/T)\big)"
                r"\ \text{on}\ G(z),\ T = 1")
    hparams = (
        HParam("latent", 100, 8, 1024, "noise dimension of the generator"),
        HParam("oh_weight", 1.0, 0.0, 100.0, "weight of the one-hot (confident teacher) loss"),
        HParam("act_weight", 0.1, 0.0, 100.0, "weight alpha of the activation loss (large teacher features)"),
        HParam("ie_weight", 5.0, 0.0, 100.0, "weight beta of the information-entropy loss (balanced classes; "
                                             "entropy in log base 10, as the official code)"),
        HParam("temperature", 1.0, 1.0, 20.0, "KD temperature for the student (official: 1, no T^2)"),
        HParam("g_lr", 1e-3, 1e-6, 1.0, "learning rate of the generator's Adam optimiser", log=True),
    )
    notes = ("The student sees no real training image. Saved: 64 generated images with the teacher's labels. "
             "Paper and code: the paper writes the entropy H without a base; the official code uses log10, which "
             "we follow (a natural-log entropy is ln 10 ~= 2.30 times larger: ie_weight 11.5 reproduces our "
             "earlier ln form at 5). Earlier versions distilled at T = 4 with T^2.")

    def __init__(self, ctx: RunContext, **hp):
        super().__init__(ctx, **hp)
        c, h, _ = ctx.dataset.shape
        self.generator = Generator(self.hp["latent"], c, h).to(ctx.device)
        self.t_specs = TapSpecs.of(self.teacher, ctx.config.teacher_stages)
        self.gen = torch.Generator().manual_seed(ctx.config.seed + 11)
        self.g_opt = torch.optim.Adam(self.generator.parameters(), lr=self.hp["g_lr"], betas=(0.5, 0.999))

    def get_extra_state(self):
        return {"g_opt": self.g_opt.state_dict()}

    def set_extra_state(self, state):
        self.g_opt.load_state_dict(state["g_opt"])

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.hp["latent"], generator=self.gen).to(self.ctx.device)

    def sample_images(self, n):
        was = self.generator.training
        self.generator.eval()
        x = self.generator(self.noise(n))
        self.generator.train(was)
        return x

    def generator_losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        t = forward_outputs(self.teacher, x, {"embedding"}, self.t_specs)
        p_mean = F.softmax(t.logits.float(), 1).mean(0)
        return {"g_onehot": self.hp["oh_weight"] * F.cross_entropy(t.logits, t.logits.argmax(1)),
                "g_act": -self.hp["act_weight"] * t.embedding.abs().mean(),
                "g_entropy": self.hp["ie_weight"] * (p_mean * p_mean.clamp_min(1e-8).log10()).sum()}

    def train_step(self, batch: Batch):
        x = self.generator(self.noise(len(batch.y)))
        losses = self.generator_losses(x)
        self.g_opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        self.g_opt.step()
        self.g_opt.zero_grad(set_to_none=True)     # so the run's optimiser skips the generator
        z, kd = self.distill_on(x.detach(), batch)
        return z, {k: v.detach() for k, v in losses.items()} | {"kd": kd}


# ----------------------------------------------------------------------------- DeepInversion

class _BNStats:
    """Forward hooks on the teacher's BatchNorm layers: the distance between the batch statistics
    of each layer's input and the layer's running (training-data) statistics."""

    def __init__(self, model: nn.Module):
        self.losses: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self.hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        if not self.handles:
            raise ValueError("scheme 'deepinversion' needs a teacher with BatchNorm2d layers (their statistics are "
                             "what the images are made to match)")

    def hook(self, module, inputs, output):
        x = inputs[0].float()
        mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
        self.losses.append(torch.norm(mean - module.running_mean, 2) + torch.norm(var - module.running_var, 2))

    def remove(self):
        for h in self.handles:
            h.remove()


@register_scheme
class DeepInversion(_DataFree):
    """Synthesis first, then KD. At the run's first step (once; the pool is in the checkpoint, so a
    resumed run keeps it), a pool of `n_images` images is optimised from noise with Adam, batch by
    batch, so that the frozen teacher (eval mode) classifies them as balanced target classes (CE),
    its BatchNorm layers see their training statistics (hooks: ||mu - mu_BN|| + ||var - var_BN||
    per layer), and they are smooth and bounded, with random jitter and flips between iterations as
    in the paper. The image priors follow the official code (NVlabs/DeepInversion, deepinversion.py
    `get_image_prior_losses` and `get_images`, whose defaults tv_l2 1e-4 and l2 1e-5 are ours): the
    smoothness prior is the sum of the L2 norms (not squared) of the differences to the four neighbours
    (right, down and both diagonals) over the jittered batch, and the L2 prior is the mean per-image L2
    norm; each batch of the pool keeps the images of lowest total loss seen during its optimisation
    (official: `best_inputs`). Then every step, the student learns KD from the teacher on a random batch of
    the pool (augmented like the dataset). Adaptive DeepInversion's student-competition term is not
    included."""
    key = "deepinversion"
    name = "DeepInversion"
    paper = Paper("Hongxu Yin, Pavlo Molchanov, Zhizhong Li, Jose M. Alvarez, Arun Mallya, Derek Hoiem, "
                  "Niraj K. Jha, Jan Kautz", "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion",
                  2020, "CVPR", "1912.08795")
    equation = (r"\min_{\hat x}\ \mathrm{CE}(t(\hat x), \hat y) + "
                r"\alpha_{f}\sum_l \big(\|\mu_l(\hat x) - \mu_l^{BN}\|_2 + "
                r"\|\sigma^2_l(\hat x) - \sigma_l^{2,BN}\|_2\big) + \alpha_{tv}\sum_{d\in\{\rightarrow,\downarrow,"
                r"\searrow,\nearrow\}}\|\hat x - \mathrm{shift}_d\,\hat x\|_2 + "
                r"\alpha_{\ell_2}\,\tfrac1n\textstyle\sum_i\|\hat x_i\|_2")
    hparams = (
        HParam("n_images", 512, 16, 100_000, "size of the synthesised pool"),
        HParam("iterations", 300, 1, 100_000, "Adam iterations per batch of the pool"),
        HParam("lr", 0.1, 1e-4, 10.0, "Adam learning rate of the images", log=True),
        HParam("bn_weight", 1.0, 0.0, 1e3, "weight alpha_f of the BatchNorm-statistics term"),
        HParam("tv_weight", 1e-4, 0.0, 10.0, "weight of the smoothness prior (L2 norms of the four neighbour "
                                             "differences; official tv_l2)", log=True),
        HParam("l2_weight", 1e-5, 0.0, 10.0, "weight of the L2 prior (mean per-image L2 norm; official l2)", log=True),
        HParam("temperature", 4.0, 1.0, 20.0, "KD temperature for the student"),
    )
    notes = ("The student sees no real training image. Synthesis runs once, at the first step (counted in epoch 1). "
             "Paper and code: the paper names the priors (total variation, l2 norm), the code fixes their form; "
             "we follow the official ImageNet code (earlier versions used the squared differences to two "
             "neighbours / batch and ||x||^2 / batch, and kept the last iterate). The official code stores the "
             "best batch one Adam step after the loss that chose it (its CIFAR script even aliases it to the last "
             "iterate); we keep the images the lowest loss was measured on. Its first-BN-layer multiplier "
             "(ImageNet script: 10) is not applied (the CIFAR script has none).")

    def __init__(self, ctx: RunContext, **hp):
        super().__init__(ctx, **hp)
        c, h, w = ctx.dataset.shape
        n = self.hp["n_images"]
        self.register_buffer("pool", torch.zeros(n, c, h, w, device=ctx.device))
        self.register_buffer("pool_ready", torch.zeros((), dtype=torch.bool, device=ctx.device))
        self.gen = torch.Generator().manual_seed(ctx.config.seed + 13)

    @torch.enable_grad()
    def synthesise(self) -> None:
        data, cfg, k = self.ctx.dataset, self.ctx.config, self.ctx.dataset.num_classes
        n, chunk = len(self.pool), max(cfg.batch_size, 64)
        _, _, h, w = self.pool.shape
        hooks = _BNStats(self.teacher)
        self.ctx.log(f"synthesising {n} images from the teacher ({self.hp['iterations']} iterations per batch of "
                     f"{chunk}) before the student's first step")
        total, done = math.ceil(n / chunk) * self.hp["iterations"], 0
        self.ctx.progress("synthesis", 0, total)
        try:
            with torch.autocast(self.ctx.device.type, enabled=False):
                for start in range(0, n, chunk):
                    m = min(chunk, n - start)
                    y = (torch.arange(start, start + m) % k).to(self.ctx.device)
                    x = torch.randn(m, *self.pool.shape[1:], generator=self.gen).to(self.ctx.device).requires_grad_()
                    opt = torch.optim.Adam([x], lr=self.hp["lr"], betas=(0.5, 0.9))
                    jitter = max(1, h // 16)
                    best, best_x = math.inf, x.detach().clone()
                    for _ in range(self.hp["iterations"]):
                        self.ctx.check_cancel()
                        dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=self.gen).tolist()
                        xj = torch.roll(x, (dy, dx), (2, 3))
                        if data.spec.augment == "crop_flip" and torch.rand((), generator=self.gen) < 0.5:
                            xj = xj.flip(3)
                        hooks.losses.clear()
                        loss = (F.cross_entropy(self.teacher(xj), y) + self.hp["bn_weight"] * sum(hooks.losses)
                                + self.hp["tv_weight"] * total_variation(xj)
                                + self.hp["l2_weight"] * image_l2_prior(xj))
                        if loss.item() < best:        # the official best_inputs: lowest total loss so far
                            best, best_x = loss.item(), x.detach().clone()
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        done += 1
                        self.ctx.progress("synthesis", done, total, loss=loss.detach())
                    self.pool[start:start + m] = best_x
        finally:
            hooks.remove()
        self.ctx.progress("synthesis", total, total)
        self.pool_ready.fill_(True)

    def sample_images(self, n):
        if not self.pool_ready:
            self.synthesise()
        return self.pool[:n]

    def train_step(self, batch: Batch):
        if not self.pool_ready:
            self.synthesise()
        data, cfg = self.ctx.dataset, self.ctx.config
        idx = torch.randint(0, len(self.pool), (len(batch.y),), generator=self.gen).to(self.pool.device)
        x = self.pool[idx]
        if cfg.augment and data.spec.augment != "none":
            x = augment_batch(x, data.spec.pad, flip=data.spec.augment == "crop_flip", generator=self.gen)
        z, kd = self.distill_on(x, batch)
        return z, {"kd": kd}


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """DeepInversion's l2 image prior, as the official `get_image_prior_losses` (loss_var_l2): the sum,
    over the four neighbour directions (right, down, and the two diagonals), of the L2 norm -- not
    squared, over the whole batch -- of the pixel differences."""
    return ((x[..., :, :-1] - x[..., :, 1:]).norm() + (x[..., :-1, :] - x[..., 1:, :]).norm()
            + (x[..., 1:, :-1] - x[..., :-1, 1:]).norm() + (x[..., :-1, :-1] - x[..., 1:, 1:]).norm())


def image_l2_prior(x: torch.Tensor) -> torch.Tensor:
    """DeepInversion's L2 image prior, as the official `get_images` (loss_l2): each image's L2 norm
    (not squared), batch mean."""
    return x.flatten(1).norm(dim=1).mean()
