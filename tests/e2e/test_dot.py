"""DOT (Zhao et al., ICCV 2023) as an optimiser: its two momentum buffers by hand, following mdistiller's
mdistiller/engine/dot.py, and `--optimizer dot` end to end."""
import json

import pytest
import torch

from explorer import cli
from explorer.config import ConfigError
from explorer.dot import DistillationOrientedTrainer, split_losses
from explorer.recipes import resolve


def _two_steps(lr=0.1, mu=0.9, delta=0.075, wd=0.01):
    """Parameters reached by both losses (a), by the task only (b), by the distillation only (c)."""
    a, b, c = (torch.tensor([1.0, -2.0], requires_grad=True) for _ in range(3))
    opt = DistillationOrientedTrainer([a, b, c], lr=lr, momentum=mu, delta=delta, weight_decay=wd)
    history = []
    for step in range(2):
        k = step + 1.0
        kd = (k * a * a).sum() + (3 * c).sum()           # grads: 2 k a, 3
        task = (a * 5 * k).sum() + (b * b * k).sum()      # grads: 5 k, 2 k b
        opt.zero_grad()
        kd.backward(retain_graph=True)
        opt.step_kd()
        opt.zero_grad()
        task.backward()
        opt.step()
        history.append([t.detach().clone() for t in (a, b, c)])
    return history


def test_dot_updates_equal_the_official_formulas_by_hand():
    lr, mu, delta, wd = 0.1, 0.9, 0.075, 0.01
    a = b = c = [1.0, -2.0]
    bt_a = bk_a = bt_b = bk_c = None
    for step in range(2):
        k = step + 1.0
        # a: both losses -- task buffer with mu - delta (weight decay in it), kd buffer with mu + delta
        gt = [5 * k + wd * x for x in a]
        bt_a = gt if bt_a is None else [(mu - delta) * o + g for o, g in zip(bt_a, gt)]
        a_mid = [x - lr * v for x, v in zip(a, bt_a)]
        gk = [2 * k * x for x in a]                     # the kd gradient was taken before the task update
        bk_a = gk if bk_a is None else [(mu + delta) * o + g for o, g in zip(bk_a, gk)]
        a = [x - lr * v for x, v in zip(a_mid, bk_a)]
        # b: task only -- its buffer uses the mean momentum mu
        gt = [2 * k * x + wd * x for x in b]
        bt_b = gt if bt_b is None else [mu * o + g for o, g in zip(bt_b, gt)]
        b = [x - lr * v for x, v in zip(b, bt_b)]
        # c: distillation only -- mean momentum, weight decay only after its first step
        gk = [3.0, 3.0]
        bk_c = gk if bk_c is None else [mu * o + g + wd * x for o, g, x in zip(bk_c, gk, c)]
        c = [x - lr * v for x, v in zip(c, bk_c)]
        got_a, got_b, got_c = _two_steps(lr, mu, delta, wd)[step]
        assert got_a.tolist() == pytest.approx(a) and got_b.tolist() == pytest.approx(b)
        assert got_c.tolist() == pytest.approx(c)


def test_split_losses_takes_the_cross_entropy_as_the_task():
    ce, kd, at = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)
    task, distil = split_losses({"ce": ce, "kd": kd, "at": at})
    assert task.item() == 1.0 and distil.item() == 5.0
    with pytest.raises(ValueError, match="cross-entropy"):
        split_losses({"kd": kd})


def test_dot_is_refused_where_there_is_nothing_to_split():
    assert resolve({"optimizer": "dot", "methods": "kd"}).lr == 0.05   # the SGD recipe's learning rate
    for bad in ({"optimizer": "dot", "methods": []}, {"optimizer": "dot", "scheme": "dml"},
                {"optimizer": "dot", "ce_weight": 0.0}):
        with pytest.raises(ConfigError, match="optimizer"):
            resolve(bad)
    with pytest.raises(ConfigError, match="dot_delta"):
        resolve({"optimizer": "dot", "momentum": 0.95, "dot_delta": 0.1})


def test_optimizer_dot_runs_from_the_cli(capsys):
    code = cli.main(["run", "--dataset", "digits", "--method", "kd", "--optimizer", "dot", "--n-train", "300",
                     "--epochs", "10", "--json"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # measured here: DOT 0.486, SGD 0.489 with the same budget; 10 classes, so chance is 0.1
    assert result["status"] == "completed" and result["test_acc"] > 0.3
