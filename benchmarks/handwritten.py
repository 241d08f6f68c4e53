"""Hand-written reference networks, as PyTorch engineers write them, to measure dpc's code against.

HandLISTA is the idiomatic version (one parameter per layer in ParameterLists, products
and a sign/relu shrink); TunedLISTA adds the tricks a performance-minded engineer reaches
for (addmm fusing product and sum, soft threshold as relu(v - t) - relu(-v - t)).
Not generated, not imported by dpc.
"""
import torch
from torch import nn


class HandLISTA(nn.Module):
    """LISTA (Gregor & LeCun 2010), untied: z_{k+1} = soft(W_k x + S_k z_k, theta_k), z_0 = 0."""

    def __init__(self, D, lam, steps):
        super().__init__()
        L = torch.linalg.matrix_norm(D, ord=2) ** 2
        n = D.shape[1]
        W = D.T / L
        S = torch.eye(n, dtype=D.dtype, device=D.device) - D.T @ D / L
        self.W = nn.ParameterList([nn.Parameter(W.clone()) for _ in range(steps)])
        self.S = nn.ParameterList([nn.Parameter(S.clone()) for _ in range(steps)])
        self.theta = nn.ParameterList([nn.Parameter((lam / L).clone()) for _ in range(steps)])
        self.steps = steps

    def forward(self, x):
        z = self.shrink(x @ self.W[0].T, self.theta[0])
        for k in range(1, self.steps):
            z = self.shrink(x @ self.W[k].T + z @ self.S[k].T, self.theta[k])
        return z

    @staticmethod
    def shrink(v, t):
        return torch.sign(v) * torch.relu(v.abs() - t)


class TunedLISTA(HandLISTA):
    """The same network, tuned: addmm fuses the second product with the sum; the fastest shrink."""

    def forward(self, x):
        z = self.shrink(x @ self.W[0].T, self.theta[0])
        for k in range(1, self.steps):
            z = self.shrink(torch.addmm(x @ self.W[k].T, z, self.S[k].T), self.theta[k])
        return z

    @staticmethod
    def shrink(v, t):
        return torch.relu(v - t) - torch.relu(-v - t)
