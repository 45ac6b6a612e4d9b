from __future__ import annotations

import numpy as np
import torch

from freeavatar_server.training.encoder.model import (
    EmotionClassifier,
    ExpressionEncoder,
    MaskedAutoencoder,
    patchify,
)
from freeavatar_server.training.encoder.train import (
    all_triplet_loss,
    augment,
    symmetric_triplet_loss,
    triplet_correct,
)


def test_embedding_is_16d_unit_length(tiny_model):
    enc = ExpressionEncoder(tiny_model).eval()
    out = enc(torch.rand(5, 3, 32, 32))
    assert out.shape == (5, 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)


def test_patchify_matches_conv_token_order(tiny_model):
    # a conv with a one-hot kernel picks one pixel per patch: patchify must put the same pixel
    # at the same place, or MAE would reconstruct the wrong patch
    x = torch.rand(2, 3, 32, 32)
    conv = torch.nn.Conv2d(3, 1, 8, stride=8, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 2, 3, 5] = 1.0
    tokens = conv(x).flatten(2).transpose(1, 2)[..., 0]
    patches = patchify(x, 8).reshape(2, 16, 8, 8, 3)
    assert torch.allclose(tokens, patches[:, :, 3, 5, 2])


def test_mae_loss_falls_when_overfitting_one_batch(tiny_model):
    torch.manual_seed(0)
    mae = MaskedAutoencoder(tiny_model)
    x = torch.rand(8, 3, 32, 32)
    opt = torch.optim.AdamW(mae.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        torch.manual_seed(1)  # same mask every step: a fixed target to overfit
        loss, _ = mae(x, 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss.detach())
    assert float(loss) < 0.7 * first


def test_classifier_learns_classes_that_differ_only_slightly(tiny_model):
    # faces share most of their pixels; the class is a faint patch. (The classifier without
    # head_norm passes this too: it checks the classifier can learn, not why it once did not.)
    torch.manual_seed(0)
    clf = EmotionClassifier(tiny_model, 3)
    y = torch.arange(24) % 3
    x = 0.5 + 0.02 * torch.rand(24, 3, 32, 32)
    for k in range(3):
        x[y == k, :, 4 + 8 * k : 12 + 8 * k, 8:16] += 0.1
    opt = torch.optim.AdamW(clf.parameters(), lr=3e-3)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(clf(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (clf.eval()(x).argmax(1) == y).float().mean() == 1.0


def test_symmetric_triplet_loss_values():
    # odd face = 2; a=(0), p=(1), n=(2) on a line: d(a,p)=1, d(a,n)=3, d(p,n)=2
    emb = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]]])
    m = torch.tensor([0.2])
    assert float(symmetric_triplet_loss(emb, torch.tensor([2]), m)) == 0.0
    # label face 0 as odd: a=1, p=2 (d=2), n=0: d(a,n)=1, d(p,n)=3 -> relu(2-1+.2)+relu(2-3+.2)
    assert abs(float(symmetric_triplet_loss(emb, torch.tensor([0]), m)) - 1.2) < 1e-5
    # margin matters: a near-tie that is right but inside the margin still costs
    emb2 = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.05]]])
    assert float(symmetric_triplet_loss(emb2, torch.tensor([2]), torch.tensor([0.1]))) > 0


def test_triplet_loss_trains_embeddings_to_be_right():
    torch.manual_seed(0)
    emb = torch.randn(64, 3, 16, requires_grad=True)
    odd = torch.randint(0, 3, (64,))
    opt = torch.optim.Adam([emb], lr=0.05)
    for _ in range(150):
        loss = symmetric_triplet_loss(torch.nn.functional.normalize(emb, dim=-1), odd, torch.full((64,), 0.2))
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = torch.nn.functional.normalize(emb, dim=-1).detach().numpy()
    assert float(loss.detach()) == 0.0
    assert triplet_correct(final, odd.numpy()).mean() == 1.0


def test_all_triplet_loss_labels_every_clear_triplet_from_ground_truth():
    rng = np.random.default_rng(0)
    expr = torch.from_numpy(rng.uniform(0, 1, (24, 25)).astype(np.float32))
    classes = torch.full((24,), -1)
    # an embedding that is the ground truth itself gets every clear triplet right
    _, wrong = all_triplet_loss(expr, expr, classes)
    assert wrong == 0.0
    # a random one gets many wrong, and the loss trains it to get (almost) all right
    torch.manual_seed(0)
    emb = torch.randn(24, 16, requires_grad=True)
    _, wrong_before = all_triplet_loss(torch.nn.functional.normalize(emb, dim=-1), expr, classes)
    assert wrong_before > 0.3
    opt = torch.optim.Adam([emb], lr=0.05)
    for _ in range(200):
        loss, wrong = all_triplet_loss(torch.nn.functional.normalize(emb, dim=-1), expr, classes)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert wrong < 0.05


def test_all_triplet_loss_uses_the_one_class_margin():
    # three faces of one class: (0, 1) are the close pair; right by 0.15, inside 0.2, outside 0.1
    expr = torch.tensor([[0.0], [0.1], [1.0]])
    emb = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.0, 0.65]])
    one, _ = all_triplet_loss(emb, expr, torch.tensor([4, 4, 4]))
    mixed, _ = all_triplet_loss(emb, expr, torch.tensor([4, 4, 5]))
    assert float(one) == 0.0 and float(mixed) > 0.0


def test_triplet_correct_requires_both_inequalities():
    e = np.array([[[0.0], [1.0], [1.5]]])  # a=0, p=1, n=1.5 for odd=2: d(a,p)=1 < d(a,n)=1.5 but > d(p,n)=.5
    assert not triplet_correct(e, np.array([2]))[0]
    assert triplet_correct(np.array([[[0.0], [1.0], [3.0]]]), np.array([2]))[0]


def test_augment_flip_is_shared_and_output_in_range():
    x = torch.rand(6, 3, 32, 32)
    out = augment(x, torch.Generator().manual_seed(0), flip=torch.tensor([True] * 3 + [False] * 3))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
