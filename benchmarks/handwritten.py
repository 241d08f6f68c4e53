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


class HandRPCA(nn.Module):
    """Learned robust PCA (Sprechmann et al. 2015's idea on proximal gradient, as examples/rpca.dp): every layer
    L, S <- svt(L - G, mu_k/2), soft(S - G, lam_k/2) with G = (L + S - X)/2 computed once; svt by batched
    torch.linalg.svd and its own autograd; mu_k, lam_k >= 0 kept by softplus, as the generated module does.
    The first layer starts from L = S = 0 (G = -X/2), written out as an engineer would."""

    def __init__(self, mu, lam, steps):
        super().__init__()
        raw = lambda v: torch.log(torch.expm1(torch.as_tensor(float(v))))  # softplus(raw) = v  # noqa: E731
        self.mu_raw = nn.ParameterList([nn.Parameter(raw(mu)) for _ in range(steps)])
        self.lam_raw = nn.ParameterList([nn.Parameter(raw(lam)) for _ in range(steps)])
        self.steps = steps

    @staticmethod
    def svt(A, t):
        U, s, Vh = torch.linalg.svd(A, full_matrices=False)
        return (U * torch.relu(s - t).unsqueeze(-2)) @ Vh

    @staticmethod
    def soft(v, t):
        return torch.relu(v - t) - torch.relu(-v - t)

    def forward(self, X):
        F = torch.nn.functional
        half = X / 2
        L = self.svt(half, F.softplus(self.mu_raw[0]) / 2)
        S = self.soft(half, F.softplus(self.lam_raw[0]) / 2)
        for k in range(1, self.steps):
            G = (L + S - X) / 2
            L, S = self.svt(L - G, F.softplus(self.mu_raw[k]) / 2), self.soft(S - G, F.softplus(self.lam_raw[k]) / 2)
        return L
