"""Hand-written reference networks, as a performance-minded PyTorch engineer writes them.

Used by the speed benchmarks to measure dpc's generated code against. Not generated,
not imported by dpc.
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
        self.W = nn.Parameter(W.repeat(steps, 1, 1))
        self.S = nn.Parameter(S.repeat(steps, 1, 1))
        self.theta = nn.Parameter((lam / L).repeat(steps))
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
    """The same network with the tricks a performance-minded engineer reaches for:
    addmm fuses the two products and the sum, and soft threshold is v - clamp(v, -t, t)."""

    def forward(self, x):
        z = self.shrink(x @ self.W[0].T, self.theta[0])
        for k in range(1, self.steps):
            z = self.shrink(torch.addmm(x @ self.W[k].T, z, self.S[k].T), self.theta[k])
        return z

    @staticmethod
    def shrink(v, t):
        return v - torch.clamp(v, -t, t)
