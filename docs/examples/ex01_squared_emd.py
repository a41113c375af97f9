"""
The squared EMD charges by distance, cross-entropy does not
===========================================================

Five ordered classes, true class 0. Two predictions put 0.6 of their mass on the true class and
the remaining 0.4 on a wrong one: class 1 (a near miss) or class 4 (far off). Cross-entropy only
sees the 0.6 and charges both the same; the squared EMD,
:math:`\\frac1C\\sum_k (P_k - T_k)^2` on the cumulative distributions, charges the far miss more.
"""

import torch
import torch.nn.functional as F

import emdloss
from emdloss.functional import emd, squared_emd

target = torch.tensor([0, 0])
probs = torch.tensor(
    [
        [0.6, 0.4, 0.0, 0.0, 0.0],  # near miss
        [0.6, 0.0, 0.0, 0.0, 0.4],  # far miss
    ]
)
ce = F.nll_loss(probs.log(), target, reduction="none")
sq = squared_emd(probs, target, input_type="probs", reduction="none")
w1 = emd(probs, target, p=1, input_type="probs", reduction="none")
for name, row in zip(["near miss", "far miss"], range(2), strict=True):
    print(f"{name:9s}  CE {ce[row]:.4f}   EMD^2 {sq[row]:.4f}   W1 {w1[row]:.4f}")

# %%
# By hand: the CDF of the near miss is (0.6, 1, 1, 1, 1) against (1, 1, 1, 1, 1), so
# EMD^2 = 0.4^2 / 5 = 0.032; the far miss leaves 0.4 behind for four steps: 4 x 0.16 / 5 = 0.128.
# W1 is the mass times the distance it has to move: 0.4 x 1 and 0.4 x 4.
assert torch.allclose(sq, torch.tensor([0.032, 0.128]))
assert torch.allclose(w1, torch.tensor([0.4, 1.6]))

# %%
# The module form takes logits, like ``nn.CrossEntropyLoss``, and trains a network the same way.
torch.manual_seed(0)
net = torch.nn.Linear(3, 5)
x, y = torch.randn(64, 3), torch.randint(0, 5, (64,))
criterion = emdloss.SquaredEMDLoss()
optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
for step in range(101):
    loss = criterion(net(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % 25 == 0:
        print(f"step {step:3d}  EMD^2 {loss.item():.4f}")
