"""The reference notebook's model, loss and training loop, copied faithfully as the speed baseline.

Differences from the notebook, none of which touch the timed work: the 'Initialized VAE' prints are
dropped, the per-100-batch prints go through `log` (print by default), and the image generation every
10 epochs is left out (it is not part of an epoch's training).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader


class VAE(nn.Module):
    def __init__(self, input_dim=784, hidden_dim=400, latent_dim=20):
        super(VAE, self).__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
        )
        self.fc_mu = nn.Linear(hidden_dim, latent_dim)
        self.fc_logvar = nn.Linear(hidden_dim, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, input_dim), nn.Sigmoid(),
        )

    def encode(self, x):
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def vae_loss_function(recon_x, x, mu, logvar):
    bce_loss = F.binary_cross_entropy(recon_x, x, reduction='sum')
    kld_loss = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce_loss + kld_loss, bce_loss, kld_loss


def train_one_epoch(model, optimizer, dataloader, epoch, device='cpu', log=print):
    """One epoch of the notebook's train_vae loop; returns its average loss per example."""
    model.train()
    epoch_loss = 0
    epoch_bce = 0
    epoch_kld = 0
    for batch_idx, batch in enumerate(dataloader):
        batch = batch.to(device)
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(batch)
        loss, bce, kld = vae_loss_function(recon_batch, batch, mu, logvar)
        loss.backward()
        optimizer.step()
        epoch_loss += loss.item()
        epoch_bce += bce.item()
        epoch_kld += kld.item()
        if batch_idx % 100 == 0:
            log(f"Epoch {epoch+1:3d}, Batch {batch_idx:3d}: "
                f"BCE={bce.item():8.1f}, KLD={kld.item():6.1f}, "
                f"Total={loss.item():8.1f}")
    return epoch_loss / len(dataloader.dataset)


def setup(trainX, device='cpu'):
    """The notebook's training set-up: model, Adam 1e-3, DataLoader(batch 128, shuffle)."""
    vae = VAE().to(device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    dataloader = DataLoader(trainX, batch_size=128, shuffle=True)
    return vae, optimizer, dataloader
