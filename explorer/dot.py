"""DOT, the Distillation-Oriented Trainer (Zhao et al., ICCV 2023): an optimiser, not a loss.

SGD keeps two momentum buffers per parameter: the task loss's gradient (the cross-entropy) moves with
momentum mu - delta, the distillation loss's gradient with mu + delta, so the knowledge terms, whose
gradients are noisier batch to batch, are smoothed more. A step takes the distillation gradient first
(`step_kd`), then the task gradient (`step`), which applies both buffers:

    b_task <- m_task b_task + (g_task + wd p);   p <- p - lr b_task
    b_kd   <- m_kd   b_kd   + g_kd;              p <- p - lr b_kd

Convention (mdistiller's mdistiller/engine/dot.py, the code of the paper's numbers): a buffer starts as its
first gradient; a parameter that only one of the two losses reaches uses the mean momentum (mu) for that
loss's buffer; weight decay enters the task buffer, and the kd buffer only for parameters the task loss
does not reach (after their first step); no Nesterov, no dampening. Default delta 0.075 (its CIFAR-100
configs, with mu 0.9).
"""
from __future__ import annotations

import torch


class DistillationOrientedTrainer(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.9, delta: float = 0.075, weight_decay: float = 0.0):
        if not 0 <= momentum - delta and momentum + delta < 1:
            raise ValueError(f"DOT needs 0 <= momentum - delta and momentum + delta < 1; got momentum {momentum}, "
                             f"delta {delta}")
        super().__init__(params, dict(lr=lr, momentum=momentum, delta=delta, weight_decay=weight_decay))
        self._kd_grads: dict[torch.Tensor, torch.Tensor] = {}

    @torch.no_grad()
    def step_kd(self) -> None:
        """Take the distillation loss's gradients (call after its backward, before the task's)."""
        self._kd_grads = {p: p.grad.clone() for g in self.param_groups for p in g["params"] if p.grad is not None}

    @torch.no_grad()
    def step(self, closure=None):
        kd = self._kd_grads
        for group in self.param_groups:
            lr, mu, delta, wd = group["lr"], group["momentum"], group["delta"], group["weight_decay"]
            for p in group["params"]:
                task_grad, kd_grad = p.grad, kd.get(p)
                state = self.state[p]
                if task_grad is not None:
                    d = task_grad.add(p, alpha=wd) if wd else task_grad
                    m = mu - delta if kd_grad is not None else mu
                    buf = state.get("task_buffer")
                    state["task_buffer"] = buf = d.clone() if buf is None else buf.mul_(m).add_(d)
                    p.add_(buf, alpha=-lr)
                if kd_grad is not None:
                    buf = state.get("kd_buffer")
                    if buf is None:
                        buf = kd_grad
                    elif task_grad is not None:
                        buf.mul_(mu + delta).add_(kd_grad)
                    else:
                        buf.mul_(mu).add_(kd_grad.add(p, alpha=wd) if wd else kd_grad)
                    state["kd_buffer"] = buf
                    p.add_(buf, alpha=-lr)
        self._kd_grads = {}


def split_losses(losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(task loss, distillation loss) of a step's terms: the cross-entropy is the task, the rest distil."""
    task = losses.get("ce")
    kd = [v for k, v in losses.items() if k != "ce"]
    if task is None or not kd:
        raise ValueError("the DOT optimiser needs a cross-entropy term and at least one distillation term")
    return task, sum(kd)
