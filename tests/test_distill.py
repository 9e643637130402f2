"""Knowledge distillation: the soft-target term, a frozen teacher, a student that learns from it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.compress.distill import Distillation, distillation_kl
from core.errors import ConfigError


def test_soft_term_is_zero_only_when_the_student_matches_the_teacher() -> None:
    teacher = torch.randn(8, 7)
    assert distillation_kl(teacher.clone(), teacher, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_kl(torch.randn(8, 7), teacher, 4.0).item() > 0.01
    # T^2 scaling: the soft term's size does not collapse as the temperature grows
    student = torch.randn(8, 7)
    assert distillation_kl(student, teacher, 8.0).item() > 0.1 * distillation_kl(student, teacher, 1.0).item()


def test_student_loss_decreases_and_the_teacher_stays_frozen() -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 7))
    teacher.train()  # as loaded for fine-tuning: Distillation must freeze it
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    kd = Distillation(teacher, alpha=0.7, temperature=3.0)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())

    x, y = torch.randn(256, 10), torch.randint(0, 7, (256,))  # random labels: only the teacher has a rule

    def train_student(loss_of) -> tuple[nn.Module, list[float]]:
        torch.manual_seed(1)
        student = nn.Sequential(nn.Linear(10, 7))
        opt = torch.optim.SGD(student.parameters(), lr=0.5)
        losses = []
        for _ in range(60):
            loss = loss_of(student(x))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return student, losses

    distill_loss = kd.loss(nn.CrossEntropyLoss())
    distilled, losses = train_student(lambda logits: distill_loss(logits, y, kd.teacher_logits(x)))
    plain, _ = train_student(lambda logits: nn.functional.cross_entropy(logits, y))
    assert losses[-1] < 0.8 * losses[0]
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # BN running stats too

    def agreement(student: nn.Module) -> float:
        return (student(x).argmax(1) == kd.teacher_logits(x).argmax(1)).float().mean().item()

    assert agreement(distilled) > agreement(plain) + 0.15  # it learned the teacher's decisions


@pytest.mark.parametrize(("alpha", "temperature", "message"), [
    (0.0, 4.0, "alpha must be in \\(0, 1\\]"), (1.5, 4.0, "alpha"), (0.5, 0.0, "temperature must be > 0")])
def test_bad_settings_are_refused(alpha: float, temperature: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Distillation(nn.Linear(2, 2), alpha=alpha, temperature=temperature)
