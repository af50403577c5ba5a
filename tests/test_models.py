import pytest
import torch
from torch import nn

from mosaicdiff.config import ModelConfig
from mosaicdiff.models import build_model
from mosaicdiff.models.patchnet import patchify, unpatchify

ARCHS = ["cnn", "attn", "identity", "top1"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("time_embedding", ["sinusoidal", "none"])
def test_output_shape_and_attention_weights(arch, time_embedding):
    model = build_model(
        ModelConfig(arch=arch, time_embedding=time_embedding), (3, 4, 4), 1000, [0, 1]
    )
    x = torch.randn(2, 5, 3, 4, 4)
    eps, a = model(x, torch.randint(1000, (2, 5)), return_attention=True)
    assert eps.shape == x.shape
    if arch == "cnn":
        assert a is None
    else:
        assert a.shape == (2, 5, 4, 4)
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 5, 4))


def test_patchify_round_trip_and_conv_equivalence():
    x = torch.randn(2, 3, 3, 8, 6)
    assert torch.equal(unpatchify(patchify(x, 2), 2, (3, 8, 6)), x)
    model = build_model(ModelConfig(arch="cnn", time_embedding="none"), (3, 4, 4), 1000, [0])
    conv = nn.Conv2d(3, 32, 2, 2)
    tconv = nn.ConvTranspose2d(32, 3, 2, 2)
    with torch.no_grad():
        conv.weight.copy_(model.w_in[0].T.reshape(32, 3, 2, 2))
        conv.bias.copy_(model.b_in[0])
        tconv.weight.copy_(model.w_out[0].reshape(32, 3, 2, 2))
        tconv.bias.copy_(model.b_out[0])  # one per channel, as the paper's (probe 59)
        xx = torch.randn(7, 3, 4, 4)
        ref = tconv(nn.functional.silu(conv(xx)))
        torch.testing.assert_close(model(xx[None], torch.tensor([0]))[0], ref, atol=1e-5, rtol=1e-5)
    # model.out_bias=position, what runs made before it trained: a bias per channel and place
    cfg = ModelConfig(arch="cnn", time_embedding="none", out_bias="position")
    loose = build_model(cfg, (3, 4, 4), 1000, [0])
    assert loose.b_out.shape == (1, 12) and model.b_out.shape == (1, 3)
    with torch.no_grad():
        loose.load_state_dict(model.state_dict() | {"b_out": model.token_bias()})
        x = torch.randn(1, 7, 3, 4, 4)
        torch.testing.assert_close(loose(x, torch.tensor([0])), model(x, torch.tensor([0])))
        loose.b_out[0, 1] += 1.0  # channel 0's second place: no per-channel bias can do that
        moved = loose(x, torch.tensor([0])) - model(x, torch.tensor([0]))
        expected = torch.zeros_like(moved)
        expected[:, :, 0, 0::2, 1::2] = 1.0  # row 0, column 1 of every patch of channel 0
        torch.testing.assert_close(moved, expected)


def _quadrant_change(arch):
    """Largest output change inside and outside the top-left quadrant when only it changes."""
    model = build_model(ModelConfig(arch=arch), (3, 4, 4), 1000, [0]).eval()
    x = torch.randn(1, 1, 3, 4, 4)
    y = x.clone()
    y[..., :2, :2] += 1.0
    with torch.no_grad():
        d = (model(x, torch.tensor([500])) - model(y, torch.tensor([500]))).abs()[0, 0].sum(0)
    outside = d.clone()
    outside[:2, :2] = 0
    return d[:2, :2].max().item(), outside.max().item()


def test_cnn_is_block_local_and_attn_is_not():
    inside, outside = _quadrant_change("cnn")
    assert inside > 1e-3 and outside == 0.0
    inside, outside = _quadrant_change("attn")
    assert inside > 1e-3 and outside > 1e-4


def test_attn_over_one_token_is_the_cnn_with_a_factored_output_map():
    # At patch 4 a 4x4 image is one token: softmax over one key is 1, so attn's eps is
    # h (I + W_v) W_out + b, the global cnn's with W_out replaced by that product (README,
    # "Local or global?"), and W_q, W_k get no gradient.
    attn = build_model(ModelConfig(arch="attn", patch=4, hidden=16), (3, 4, 4), 1000, [0, 1])
    cnn = build_model(ModelConfig(arch="cnn", patch=4, hidden=16), (3, 4, 4), 1000, [2, 3])
    with torch.no_grad():
        for name, w in cnn.named_parameters():
            w.copy_(getattr(attn, name))
        cnn.w_out.copy_((torch.eye(16) + attn.w_v) @ attn.w_out)
    x, t = torch.randn(2, 6, 3, 4, 4), torch.randint(1000, (2, 6))
    torch.testing.assert_close(attn(x, t), cnn(x, t))
    attn(x, t).square().sum().backward()
    assert attn.w_v.grad.abs().max() > 0.1
    assert attn.w_q.grad.abs().max() < 1e-6 and attn.w_k.grad.abs().max() < 1e-6


def test_top1_hard_when_sampling_gumbel_when_training():
    model = build_model(ModelConfig(arch="top1"), (3, 4, 4), 1000, [0])
    x = torch.randn(1, 64, 3, 4, 4)
    t = torch.tensor([100])
    model.train()
    torch.manual_seed(0)
    _, a_train = model(x, t, return_attention=True)
    assert set(a_train.unique().tolist()) <= {0.0, 1.0}  # straight-through: hard forward
    w = model.w_q
    eps, _ = model(x, t, return_attention=True)
    eps.sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0  # gradients reach Q through Gumbel
    model.eval()
    with torch.no_grad():
        _, a1 = model(x, t, return_attention=True)
        _, a2 = model(x, t, return_attention=True)
    assert torch.equal(a1, a2)  # argmax: deterministic
    assert torch.equal(a1.sum(-1), torch.ones(1, 64, 4))


def test_identity_attention_is_parameter_free_softmax_of_hidden():
    model = build_model(ModelConfig(arch="identity"), (3, 4, 4), 1000, [0])
    cnn = build_model(ModelConfig(arch="cnn"), (3, 4, 4), 1000, [0])
    assert {n for n, _ in model.named_parameters()} == {n for n, _ in cnn.named_parameters()}
    x, t = torch.randn(1, 3, 3, 4, 4), torch.tensor([3])
    h = model.hidden(x, t)
    expected = h + torch.softmax(h @ h.transpose(-1, -2) / 32**0.5, -1) @ h
    _, a = model(x, t, return_attention=True)
    torch.testing.assert_close(a @ h + h, expected)


def test_members_depend_on_their_seed_only():
    a = build_model(ModelConfig(arch="attn"), (3, 4, 4), 1000, [4, 9])
    b = build_model(ModelConfig(arch="attn"), (3, 4, 4), 1000, [9])
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa[1], pb[0]), name
    one = a.member(1)
    x = torch.randn(1, 2, 3, 4, 4)
    torch.testing.assert_close(one(x, torch.tensor([5])), b(x, torch.tensor([5])))


def test_top1_weights_with_given_noise_is_gumbel_softmax_with_that_noise():
    """Training draws top1's Gumbel noise per seed and gives it to `top1_weights`; with the
    noise F.gumbel_softmax would draw, the two agree in value and in gradient."""
    import torch.nn.functional as F

    from mosaicdiff.models.patchnet import top1_weights

    logits = torch.randn(2, 8, 4, 4, requires_grad=True)
    up = torch.randn(2, 8, 4, 4)  # a gradient from above
    torch.manual_seed(5)
    gumbel = -torch.empty_like(logits).exponential_().log()  # as F.gumbel_softmax draws it
    torch.manual_seed(5)
    ref = F.gumbel_softmax(logits, tau=0.7, hard=True, dim=-1)
    (ref_grad,) = torch.autograd.grad((ref * up).sum(), logits)
    ours = top1_weights(logits, 0.7, gumbel)
    (our_grad,) = torch.autograd.grad((ours * up).sum(), logits)
    assert torch.equal(ours, ref) and torch.equal(our_grad, ref_grad)
    assert not torch.equal(top1_weights(logits, 0.7, gumbel.flip(0)), ref)  # the noise counts


def test_the_group_as_a_denoiser_names_a_batch_it_cannot_read():
    # Probe 62: a batch not made of S blocks, or of other images, died in a reshape or a bmm
    from mosaicdiff.config import ModelConfig
    from mosaicdiff.models import build_model

    den = build_model(ModelConfig(arch="cnn"), (3, 4, 4), 1000, (0, 1)).as_denoiser()
    x = torch.randn(4, 3, 4, 4)
    assert torch.equal(den(x, 5), den(x, torch.full((4,), 5)))  # an int step is every sample's
    for bad in (torch.randn(3, 3, 4, 4), torch.randn(4, 1, 4, 4), torch.randn(4, 48)):
        with pytest.raises(ValueError, match=r"a group of 2 seed\(s\) takes \(S\*B, 3, 4, 4\)"):
            den(bad, 5)
    with pytest.raises(ValueError, match="t holds 3 steps"):
        den(x, torch.tensor([1, 2, 3]))
    # -1 ran as step 999 without a word; 1000 died in an IndexError
    for t, steps in ((-1, "-1..-1"), (torch.tensor([0, 1, 999, 1000]), "0..1000")):
        with pytest.raises(ValueError, match=rf"t holds steps {steps}; this network takes 0..999"):
            den(x, t)
    assert torch.equal(den(x, 999), den(x, torch.full((4,), 999)))  # the last step is fine
