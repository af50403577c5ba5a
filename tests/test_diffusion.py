import pytest
import torch

from mosaicdiff.diffusion import Schedule, eps_from_x0, x0_from_eps

S = Schedule.linear()


def test_linear_schedule_endpoints():
    assert S.T == 1000
    assert S.betas[0].item() == pytest.approx(1e-4) and S.betas[-1].item() == pytest.approx(0.02)
    assert torch.all(S.alpha_bar[1:] < S.alpha_bar[:-1])


@pytest.mark.parametrize("t", [0, 250, 999])
def test_noising_has_the_right_mean_and_variance(t):
    g = torch.Generator().manual_seed(t)
    x0 = torch.full((200_000, 1, 1, 1), 0.7)
    eps = torch.randn(x0.shape, generator=g)
    x_t = S.q_sample(x0, torch.full((200_000,), t), eps)
    ab = S.alpha_bar[t].item()
    assert x_t.mean().item() == pytest.approx(0.7 * ab**0.5, abs=0.01)
    assert x_t.var().item() == pytest.approx(1 - ab, rel=0.02, abs=1e-6)


def test_eps_and_x0_conversions_invert():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn((2, 8, 3, 4, 4), generator=g).unbind(0)
    t = torch.randint(1000, (8,), generator=g)
    x_t = S.q_sample(x0, t, eps)
    ab = S.alpha_bar[t].float().reshape(-1, 1, 1, 1)
    torch.testing.assert_close(x0_from_eps(x_t, eps, ab), x0, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(eps_from_x0(x_t, x0, ab), eps, atol=1e-4, rtol=1e-4)
    # as the samplers and machines call them, with one step's alpha_bar as a float
    one = S.alpha_bar[t[0]].item()
    torch.testing.assert_close(x0_from_eps(x_t[:1], eps[:1], one), x0[:1], atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(eps_from_x0(x_t[:1], x0[:1], one), eps[:1], atol=1e-4, rtol=1e-4)


def test_loss_is_weighted_by_one_minus_alpha_bar():
    x0 = torch.zeros(4, 1, 2, 2)
    eps = torch.ones_like(x0)
    t = torch.tensor([0, 10, 500, 999])

    def zero_model(x, t):
        return torch.zeros_like(x)

    per_example = S.losses(zero_model, x0, t, eps)
    torch.testing.assert_close(per_example, (1 - S.alpha_bar[t]).float())
    unweighted = S.losses(zero_model, x0, t, eps, weighting="none")
    torch.testing.assert_close(unweighted, torch.ones(4))
    assert S.seed_losses(zero_model, x0, t, eps).item() == pytest.approx(per_example.mean().item())


def test_grouped_loss_sums_seed_means():
    x0 = torch.zeros(2, 3, 1, 2, 2)
    t = torch.tensor([[0, 5, 9], [100, 200, 999]])

    def model(x, t):
        return torch.zeros_like(x)

    per = S.losses(model, x0, t, torch.ones_like(x0))
    seeds = S.seed_losses(model, x0, t, torch.ones_like(x0))
    assert seeds.shape == (2,)
    torch.testing.assert_close(seeds, per.mean(1))
    assert seeds[1] > seeds[0] > 0  # each seed its own mean: later timesteps weigh more
